"""The engine's command tokenizer: its WordPiece vocabulary read by the ``tokenizers`` library.

The engine folder carries the MiniLM tokenizer's ``tokenizer.json`` (lower-casing BERT normaliser,
WordPiece, ``[CLS] … [SEP]``); the Rust ``tokenizers`` library runs it in microseconds and imports in
milliseconds, without transformers or torch, so a robot needs neither. The ids equal what
transformers' ``BertTokenizerFast`` gives for the same files (tests/test_runtime_without_torch.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifact import EngineError


class CommandTokenizer:
    """``encode(text) -> (ids, mask)``, each (1, max_tokens) int64, padded and cut as the model was
    exported; ``count(text)``: how many tokens the text has before any cut."""

    def __init__(self, folder: Path, max_tokens: int):
        from tokenizers import Tokenizer
        path = Path(folder) / "tokenizer.json"
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - the library raises a bare Exception for a bad file
            raise EngineError(f"the tokenizer file {path} cannot be read ({e}); re-export the engine") from e
        # One tokenizer, cut and padded per call by the library's own steps: a second instance configured
        # for the fixed length cost 6 MB of the node's memory (docs/RESULTS.md, issue 22).
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self._specials = tok.num_special_tokens_to_add(is_pair=False)  # [CLS] and [SEP] for BERT
        if max_tokens <= self._specials:
            raise EngineError(f"max_tokens {max_tokens} leaves no room beside the {self._specials} special tokens; "
                              "re-export the engine")
        pad = tok.token_to_id("[PAD]")
        self._pad_id = 0 if pad is None else pad
        self.max_tokens = max_tokens

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids) + self._specials

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        enc = self._tok.encode(text, add_special_tokens=False)
        enc.truncate(self.max_tokens - self._specials)  # the words are cut, the special tokens stay
        enc = self._tok.post_process(enc)
        enc.pad(self.max_tokens, pad_id=self._pad_id, pad_token="[PAD]")
        return (np.array([enc.ids], dtype=np.int64), np.array([enc.attention_mask], dtype=np.int64))
