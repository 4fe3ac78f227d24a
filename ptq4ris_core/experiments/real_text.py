"""The pretrained MiniLM text encoder quantized alone, on real English nobody here wrote.

Sentences: the first sentences of the docstrings of Python's standard library (every machine
has them). Reports, per method and bit-width, the cosine similarity between FP and quantized
token features and mean-pooled sentence embeddings (as all-MiniLM-L6-v2 pools them), and which
channels carry the outliers of the Linear inputs.
"""
from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from ..calib.calibrate import attach_quantizers, calibrate_layers
from ..config import LayerSetting, QuantConfig
from ..methods import get_method
from ..models.text_encoder import TextEncoder, load_tokenizer

# Modules that do things on import (open windows, print, start programs) or are slow to import.
SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "ensurepip", "venv",
        "pydoc_data", "test", "__main__", "webbrowser", "xxsubtype", "msvcrt", "winreg", "winsound", "_msi"}


def stdlib_sentences(n: int = 600, min_len: int = 25, max_len: int = 220) -> list[str]:
    """Deterministic: first sentences of stdlib module, class and function docstrings, sorted, deduplicated."""
    found = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(sys.stdlib_module_names):
            if name in SKIP or name.startswith("_"):
                continue
            try:
                mod = importlib.import_module(name)
            except Exception:  # noqa: BLE001 - platform-specific modules
                continue
            objs = [mod] + [v for _, v in sorted(vars(mod).items()) if inspect.isfunction(v) or inspect.isclass(v)]
            for o in objs:
                doc = inspect.getdoc(o) or ""
                first = re.split(r"(?<=[.!?])\s", " ".join(doc.split()), maxsplit=1)[0]
                if min_len <= len(first) <= max_len and re.search(r"[a-z]{3}", first) and ">>>" not in first:
                    found.add(first)
    out = sorted(found)
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} docstring sentences found, {n} wanted")
    step = len(out) / n  # spread the pick over the alphabet rather than the first n
    return [out[int(i * step)] for i in range(n)]


def _batches(tok, sentences, batch=32, max_len=64):
    out = []
    for i in range(0, len(sentences), batch):
        enc = tok(sentences[i:i + batch], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        out.append((enc["input_ids"], enc["attention_mask"]))
    return out


@torch.no_grad()
def _features(encoder, batches):
    feats = []
    for ids, m in batches:
        feats.append((encoder(ids, m), m))
    return feats


def quantize_text_encoder(method_name: str, bits: int, calib_batches, options=None, progress=False):
    enc = TextEncoder.pretrained().eval()
    method = get_method(method_name, **(options or {}))
    infos = attach_quantizers(enc, method, QuantConfig(LayerSetting(bits, bits)),
                              lambda: enc(*calib_batches[0]), {"text": ["*"]})
    # Alone, the text encoder has no task loss: Hessian-scored methods fall back to mse here.
    calibrate_layers(infos, method, calib_batches, lambda b: enc(*b), None, progress, f"{method_name} W{bits}A{bits}")
    return enc


def compare(fp_feats, q_feats) -> dict:
    tok_cos, sent_cos = [], []
    for (a, m), (b, _) in zip(fp_feats, q_feats):
        valid = m.bool()
        tok_cos.append(torch.nn.functional.cosine_similarity(a[valid], b[valid], dim=-1))
        w = m[..., None].float()
        ea, eb = (a * w).sum(1) / w.sum(1), (b * w).sum(1) / w.sum(1)
        sent_cos.append(torch.nn.functional.cosine_similarity(ea, eb, dim=-1))
    t, s = torch.cat(tok_cos), torch.cat(sent_cos)
    return {"token_cos_mean": float(t.mean()), "token_cos_p5": float(t.quantile(0.05)),
            "sentence_cos_mean": float(s.mean()), "sentence_cos_min": float(s.min())}


@torch.no_grad()
def outlier_channels(encoder, batches, top: int = 6) -> dict:
    """Per Linear-input site: the channels whose max |x| is largest, and how far above the median."""
    from ..nn import QuantLinear
    stats = {}
    hooks = []
    for name, mod in encoder.named_modules():
        if isinstance(mod, (torch.nn.Linear, QuantLinear)) and name.endswith(("query", "intermediate.dense")):
            def hook(_m, args, name=name):
                x = args[0].reshape(-1, args[0].shape[-1]).abs().amax(0)
                stats[name] = torch.maximum(stats[name], x) if name in stats else x
            hooks.append(mod.register_forward_pre_hook(hook))
    for ids, m in batches:
        encoder(ids, m)
    for h in hooks:
        h.remove()
    out = {}
    for name, mx in stats.items():
        idx = mx.argsort(descending=True)[:top]
        out[name] = {"channels": idx.tolist(), "max_abs": [round(float(mx[i]), 2) for i in idx],
                     "median_max_abs": round(float(mx.median()), 3)}
    return out


def _write(res: dict, out):
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    lines = ["| method | bits | token cos (mean) | token cos (p5) | sentence cos (mean) | sentence cos (min) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['bits']} | {r['token_cos_mean']:.4f} | {r['token_cos_p5']:.4f} | "
              f"{r['sentence_cos_mean']:.4f} | {r['sentence_cos_min']:.4f} |" for r in res["rows"]]
    Path(out).with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(n: int = 600, calib: int = 32, bits=(8, 6, 4), methods=("rtn", "ptq4vit", "ptq4ris:element", "ptq4ris:channel"),
        out: Path | None = None, progress: bool = True) -> dict:
    sentences = stdlib_sentences(n + calib)
    calib_s, eval_s = sentences[::(n + calib) // calib][:calib], None
    eval_s = [s for s in sentences if s not in set(calib_s)][:n]
    tok = load_tokenizer()
    cal_b, ev_b = _batches(tok, calib_s), _batches(tok, eval_s)
    fp = TextEncoder.pretrained().eval()
    fp_feats = _features(fp, ev_b)
    rows = []
    res = {"n_sentences": len(eval_s), "n_calib": len(calib_s), "examples": eval_s[:5], "rows": rows,
           "outliers": outlier_channels(fp, ev_b)}
    for b in bits:
        for spec in tqdm(methods, desc=f"W{b}A{b}", disable=not progress):
            name, _, variant = spec.partition(":")
            options = {"rorq": variant} if name == "ptq4ris" else {}
            q = quantize_text_encoder(name, b, cal_b, options)
            rows.append({"method": spec, "bits": f"W{b}A{b}", **compare(fp_feats, _features(q, ev_b))})
        if out:  # after every bit-width, so a long run that is stopped keeps what it measured
            _write(res, out)
    return res


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Quantize the pretrained MiniLM alone and compare its features with "
                                 "FP32 on real sentences (Python standard-library docstrings).")
    ap.add_argument("--n", type=int, default=600, help="evaluation sentences (default 600)")
    ap.add_argument("--out", default="docs/results/real_text", help="path stem for .md and .json")
    a = ap.parse_args()
    r = run(n=a.n, out=Path(a.out))
    print(Path(a.out).with_suffix(".md").read_text(encoding="utf-8"))
    print("outlier channels:", r["outliers"])
