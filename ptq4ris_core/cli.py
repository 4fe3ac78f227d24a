"""The ``ptq4ris`` command. Thin: each subcommand parses its flags and calls the library."""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from .errors import InputError, PTQ4RISError

log = logging.getLogger("ptq4ris")


def cmd_train(a):
    from .models import RISConfig
    from .train import train
    cfg = RISConfig(image_size=a.image_size, embed_dim=a.embed_dim)
    command = "ptq4ris " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    path = train(Path(a.out), cfg, a.steps, a.batch, a.lr, warmup=a.warmup, val_every=a.val_every,
                 val_n=a.val_n, seed=a.seed, bf16=not a.fp32, workers=a.workers, command=command)
    print(f"weights: {path}")


def _json_out(path, obj):
    import json
    if path:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(obj, indent=2) + "\n")
        except OSError as e:
            raise InputError(f"cannot write {path} ({e.strerror}); choose a writable path") from e


def _writable(path: str) -> Path:
    """Fail before the model runs if an output cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a folder; give a file name such as {p / 'mask.png'}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise InputError(f"cannot write {p}: permission denied; choose another path")
    return p


def _save_png(array, path: Path):
    from PIL import Image
    try:
        Image.fromarray(array).save(path)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot write {path} ({e}); choose a writable .png path") from e


def cmd_eval(a):
    from .evaluate import evaluate_model
    from .metrics import format_summary
    from .models import load_model
    if a.limit <= 0:
        raise InputError(f"--limit must be positive, got {a.limit}")
    model = load_model(a.model)
    summary = evaluate_model(model, a.split, a.limit, batch=a.batch, seed=a.seed)
    summary.update({"model": str(a.model), "split": a.split, "seed": a.seed})
    print(format_summary(summary))
    _json_out(a.json, summary)


def cmd_segment(a):
    from .models import load_model
    from .segment import Segmenter, check_command, overlay, read_image
    text = check_command(a.text)
    outs = [_writable(a.out)] + ([_writable(a.overlay)] if a.overlay else [])
    image = read_image(a.image)
    h, w = image.shape[:2]
    if h * w > 4096 * 4096:
        log.warning("image is %dx%d; it is resized for the model and the mask is written at full size", w, h)
    seg = Segmenter(load_model(a.model))
    mask, score = seg.segment(image, text)
    _save_png(mask, outs[0])
    if a.overlay:
        _save_png(overlay(image, mask), outs[1])
    print(f"{outs[0]}: {int((mask > 0).sum())} px, score {score:.3f}" + (f"; overlay {outs[1]}" if a.overlay else ""))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptq4ris", description="Post-training quantization of referring image "
                                "segmentation models (PTQ4RIS) and the tools around it.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train the default RIS model on generated scenes (resumable)",
                       description="Train the LAVT-style default model on generated referring scenes. "
                       "Re-running with the same --out resumes from its checkpoint.")
    t.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.jsonl, model.safetensors")
    t.add_argument("--steps", type=int, default=12000, help="optimizer steps (default 12000)")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=500)
    t.add_argument("--val-every", type=int, default=1000, help="validate and checkpoint every N steps")
    t.add_argument("--val-n", type=int, default=256, help="validation scenes per check")
    t.add_argument("--image-size", type=int, default=128)
    t.add_argument("--embed-dim", type=int, default=48)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=1, help="scene-generating worker processes")
    t.add_argument("--fp32", action="store_true", help="train in fp32 (default: bf16 autocast, ~3.6x faster here)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="score a model on generated scenes (mIoU, oIoU, prec@X, by kind)",
                       description="Evaluate on the first N scenes of a split (always the same scenes), "
                       "batched, and print mIoU, oIoU and prec@0.5..0.9 overall and per expression kind.")
    e.add_argument("--model", default="default", help="'default' or a .safetensors written by 'ptq4ris train'")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--limit", type=int, default=1000, help="number of scenes (default 1000)")
    e.add_argument("--batch", type=int, default=32)
    e.add_argument("--seed", type=int, default=0, help="scene generator seed (default 0, the published splits)")
    e.add_argument("--json", help="also write the scores to this JSON file")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("segment", help="segment the object a sentence refers to in one image",
                       description="Write the mask (PNG, 0/255, the image's size) of the object that --text "
                       "refers to. Greyscale and RGBA images are converted; any size is accepted.")
    s.add_argument("--image", required=True, help="input image (PNG, JPEG, ...)")
    s.add_argument("--text", required=True, help='referring expression, e.g. "the small red circle on the left"')
    s.add_argument("--out", required=True, help="output mask PNG")
    s.add_argument("--overlay", help="also write the mask drawn over the image to this PNG")
    s.add_argument("--model", default="default", help="'default' or a .safetensors file")
    s.set_defaults(func=cmd_segment)
    return p


def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format="ptq4ris: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PTQ4RISError as e:
        print(f"ptq4ris: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ptq4ris: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
