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
            self._full = Tokenizer.from_file(str(path))
            self._fixed = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - the library raises a bare Exception for a bad file
            raise EngineError(f"the tokenizer file {path} cannot be read ({e}); re-export the engine") from e
        self._full.no_truncation()
        self._full.no_padding()
        self._fixed.enable_truncation(max_tokens)
        pad = self._fixed.token_to_id("[PAD]")
        self._fixed.enable_padding(length=max_tokens, pad_id=0 if pad is None else pad, pad_token="[PAD]")
        self.max_tokens = max_tokens

    def count(self, text: str) -> int:
        return len(self._full.encode(text).ids)

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        enc = self._fixed.encode(text)
        return (np.array([enc.ids], dtype=np.int64), np.array([enc.attention_mask], dtype=np.int64))
