"""The engine folder and its meta.json: what is in it, and the checks before anything runs."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import PTQ4RISError
from ..files import sha256
from .golden import GOLDEN_FILE

FORMAT = "ptq4ris-engine"
FORMAT_VERSION = 3  # 2: the segmenter takes the resized image as uint8; the text graph gives the mask too;
# 3: the export target (what the integer weights store) and the golden cases of the self-check
TEXT_GRAPH, SEG_GRAPH, META = "text_encoder.onnx", "segmenter.onnx", "meta.json"
TEXT_OUTPUTS = ("words", "word_mask")  # the text graph's outputs: the segmenter's inputs besides the image
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class EngineError(PTQ4RISError, RuntimeError):
    """An engine folder that cannot be used: missing, corrupt, altered, or from another version."""


def write_meta(folder: Path, meta: dict) -> dict:
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != META)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta,
            "files": {name: sha256(folder / name) for name in files}}
    (folder / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def read_meta(folder: Path, verify: bool = True) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise EngineError(f"no engine folder at {folder}; build one with 'ptq4ris export --model default --fp32 --out {folder}'")
    mp = folder / META
    if not mp.is_file():
        raise EngineError(f"{mp} is missing: {folder} is not an engine folder (or it is incomplete); re-export it")
    try:
        meta = json.loads(mp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EngineError(f"{mp} is not valid JSON ({e}); re-export the engine") from e
    if meta.get("format") != FORMAT:
        raise EngineError(f"{folder} is not a PTQ4RIS engine (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise EngineError(f"{folder} has engine format version {meta.get('format_version')}, this library reads "
                          f"version {FORMAT_VERSION}; re-export it with this version of ptq4ris")
    for name in (TEXT_GRAPH, SEG_GRAPH, GOLDEN_FILE) + TOKENIZER_FILES:
        if name not in meta.get("files", {}):
            raise EngineError(f"{mp} lists no {name}; re-export the engine")
    if verify:
        for name, digest in meta["files"].items():
            p = folder / name
            if not p.is_file():
                raise EngineError(f"{p} is missing; re-export the engine")
            if sha256(p) != digest:
                raise EngineError(f"{p} does not match its SHA-256 in meta.json: the file was altered or corrupted; "
                                  f"re-export the engine")
    return meta
