"""The default model's parts: the offline MiniLM, the Swin plumbing, a forward and a backward step."""
import copy

import numpy as np
import pytest
import torch

from ptq4ris_core.models import Preprocessor
from ptq4ris_core.models.layers import MatMul
from ptq4ris_core.models.swin import shift_mask, window_partition, window_reverse
from ptq4ris_core.train import ris_loss


def test_text_encoder_loads_offline_and_equals_transformers_bert(pretrained_text):
    from transformers import BertModel

    from ptq4ris_core.models.text_encoder import load_tokenizer, minilm_dir
    tok = load_tokenizer()
    batch = tok(["the small red circle on the left", "grab the star below the green ring"], padding=True,
                return_tensors="pt")
    ref = BertModel.from_pretrained(str(minilm_dir()), local_files_only=True).eval()
    with torch.no_grad():
        ours = pretrained_text(batch["input_ids"], batch["attention_mask"])
        theirs = ref(**batch).last_hidden_state
    valid = batch["attention_mask"].bool()
    assert torch.allclose(ours[valid], theirs[valid], atol=1e-4)


def test_window_partition_round_trip_and_shift_mask():
    x = torch.randn(2, 8 * 8, 5)
    assert torch.equal(window_reverse(window_partition(x, 8, 8, 4), 8, 8, 4), x)
    mask = shift_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window is contiguous: no masking
    assert (mask[3] != 0).any()  # the wrapped corner window must not attend across the seam


def test_attention_matmuls_softmax_and_gelu_are_modules(tiny_model):
    n_mm = sum(isinstance(m, MatMul) for m in tiny_model.modules())
    n_blocks = sum(tiny_model.cfg.depths) + 6 + 4  # Swin blocks + BERT layers + fusions
    assert n_mm == 2 * n_blocks
    assert sum(isinstance(m, torch.nn.Softmax) for m in tiny_model.modules()) == n_blocks
    assert sum(isinstance(m, torch.nn.GELU) for m in tiny_model.modules()) >= sum(tiny_model.cfg.depths) + 6


def test_forward_and_backward_step(tiny_model):
    tiny_model = copy.deepcopy(tiny_model)
    pre = Preprocessor(tiny_model.cfg)
    s = tiny_model.cfg.image_size
    images = np.random.default_rng(0).integers(0, 255, (2, s, s, 3), dtype=np.uint8)
    ids, m = pre.texts(["the red circle", "the leftmost blue star"])
    tiny_model.train()
    for p in tiny_model.text_encoder.parameters():
        p.requires_grad_(False)
    logits = tiny_model(pre.images(images), ids, m)
    assert logits.shape == (2, 2, s, s)
    target = torch.zeros(2, s, s, dtype=torch.bool)
    target[:, 10:30, 10:30] = True
    loss = ris_loss(logits, target)
    loss.backward()
    grads = {n: p.grad for n, p in tiny_model.named_parameters() if not n.startswith("text_encoder.")}
    assert all(g is not None for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    assert all(p.grad is None for p in tiny_model.text_encoder.parameters())


def test_the_sentence_changes_the_mask(tiny_model):
    """Language reaches the output: two sentences give two different logit maps on one image."""
    pre = Preprocessor(tiny_model.cfg)
    s = tiny_model.cfg.image_size
    image = np.random.default_rng(1).integers(0, 255, (1, s, s, 3), dtype=np.uint8)
    with torch.no_grad():
        a = tiny_model(pre.images(image), *pre.texts(["the red circle on the left"]))
        b = tiny_model(pre.images(image), *pre.texts(["the largest blue star"]))
    assert not torch.allclose(a, b)
