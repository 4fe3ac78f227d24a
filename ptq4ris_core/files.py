"""File helpers shared by the saved-model and engine formats, and the user's cache folder."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_home() -> Path:
    """$XDG_CACHE_HOME/ptq4ris, else ~/.cache/ptq4ris: work that is expensive to redo and safe to delete."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ptq4ris"
