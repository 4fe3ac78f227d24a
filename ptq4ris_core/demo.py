"""``make demo``: the main job on the default model, end to end, with what it costs.

1. Build (or reuse) the FP32 engine and the W8A8 PTQ4RIS engine of the default model.
2. Make (or reuse) a rosbag of test scenes: 640x480 bgr8 camera frames at 10 Hz, commands, ground truth.
3. Score both engines on the bag offline, and the W8A8 simulation beside them: an engine more than 1 mIoU
   point below its simulation fails the demo with the reason (its CPU, its export target).
4. Replay the bag through the live ROS 2 node (real DDS, separate processes) with each engine.
5. One table: accuracy, latency and size of FP32 against W8A8, and where the reports are.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from .files import sha256
from .tuning import tune_for_frames

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "calibration" / "W8A8.yaml"
MAX_ENGINE_LOSS = 1.0  # mIoU points an engine may lose against its own simulation before the demo fails


class EngineBelowSimulation(SystemExit):
    """The engine computes something else than the model it was exported from: wrong masks, not a table row."""


def simulated_on_bag(calibrated: Path, target: str, bag: Path) -> dict:
    """The calibrated model's fake-quant simulation, with the weights as the engine's target stores them, on the bag."""
    from .bags.evaluate import evaluate_bag
    from .calib.saved import load_quantized
    from .engine.targets import weights_for_target
    from .segment import Segmenter
    model, _ = load_quantized(calibrated)
    with weights_for_target(model, target):
        return evaluate_bag(bag, Segmenter(model), progress=False)


def check_against_simulation(name: str, engine, engine_miou: float, sim_miou: float):
    loss = 100 * (sim_miou - engine_miou)
    if loss <= MAX_ENGINE_LOSS:
        return
    r = engine.report()
    raise EngineBelowSimulation(
        f"\nFAILED: the {name} engine scores {100 * engine_miou:.2f} mIoU on {r['runtime']}, {loss:.2f} points below its "
        f"own simulation ({100 * sim_miou:.2f}); more than {MAX_ENGINE_LOSS} point means the runtime computes something "
        f"else than the model. This CPU: {r['cpu']}. Engine target: {r['target']}; self-check: {r['self_check']}. "
        f"If the target is vnni on a CPU without VNNI, re-export with --target portable; otherwise compare "
        f"'ptq4ris eval --engine {engine.folder} --backend onnxruntime' and '--backend openvino' and report it.")


def _engine_is_current(folder: Path, weights_sha: str, preset_sha: str | None, calib_n, recon: bool = False) -> bool:
    """Reuse an engine only if it is intact and was built from these weights (and this preset)."""
    from .engine.artifact import EngineError, read_meta
    try:
        meta = read_meta(folder)
    except EngineError:
        return False
    stamp = folder / "demo_stamp.json"
    if not stamp.exists():
        return False
    s = json.loads(stamp.read_text(encoding="utf-8"))
    return (meta["model"].get("weights_sha256") == weights_sha and s.get("preset_sha256") == preset_sha
            and s.get("calib_n") == calib_n and s.get("recon", False) == recon)


def build_engines(root: Path, calib_n: int | None = None, reconstruct: bool = False) -> dict:
    """The FP32 engine and the W8A8 preset's. ``reconstruct``: the preset as shipped, with its block
    reconstruction (about 15 minutes on 2 cores); by default the demo leaves it out (about 4)."""
    from .calib.saved import base_identity, save_quantized
    from .engine.export import export_fp32, export_quantized
    from .models import load_model
    from .presets import calibrate_plan, load_preset, resolve
    weights = base_identity("default")["sha256"]
    engines = {"FP32": root / "default_fp32", "W8A8": root / "default_w8a8"}
    preset_sha = sha256(PRESET)
    for name, folder in engines.items():
        want_preset = preset_sha if name == "W8A8" else None
        recon = reconstruct and name == "W8A8"
        if _engine_is_current(folder, weights, want_preset, calib_n, recon) and (
                name == "FP32" or calibrated_folder(engines).is_dir()):  # the simulation needs the calibrated model
            print(f"  {name}: reusing {folder}")
            continue
        t = time.perf_counter()
        if name == "FP32":
            export_fp32("default", folder)
        else:
            plan = resolve(load_preset(PRESET), options=() if reconstruct else ("recon=false",), n=calib_n)
            model, report = calibrate_plan(load_model("default"), plan)
            calibrated = save_quantized(model, report, calibrated_folder(engines), base="default")
            export_quantized(calibrated, folder)
        (folder / "demo_stamp.json").write_text(json.dumps({"preset_sha256": want_preset, "calib_n": calib_n, "recon": recon}), encoding="utf-8")
        print(f"  {name}: built {folder} in {time.perf_counter() - t:.0f} s")
    return engines


def calibrated_folder(engines: dict) -> Path:
    return engines["W8A8"].parent / "default_w8a8_calibrated"


def engine_size_mb(folder: Path) -> float:
    """The two graphs with their weights (``*.onnx`` and the ``*.onnx.data`` beside each)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith((".onnx", ".onnx.data"))) / 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description="The PTQ4RIS-ROS demo: quantize the default model, build the "
                                 "engines, replay a bag through the ROS 2 node, compare FP32 with W8A8.")
    ap.add_argument("--out", default="demo_out", help="reports (default demo_out)")
    ap.add_argument("--engines", default="engines", help="engine folders, reused when current (default engines)")
    ap.add_argument("--bag", default="bags/demo", help="the bag, reused when present (default bags/demo)")
    ap.add_argument("--frames", type=int, default=150, help="frames in the bag (default 150: 15 s at 10 Hz)")
    ap.add_argument("--calib", type=int, help="calibration pairs (default: the preset's 32)")
    ap.add_argument("--no-replay", action="store_true", help="skip the live ROS 2 replay")
    ap.add_argument("--reconstruct", action="store_true",
                    help="calibrate W8A8 as the preset ships it, with block reconstruction (about 15 minutes on 2 "
                    "cores instead of 4; docs/RESULTS.md: 0.2-0.3 points less drop on unseen scene styles)")
    a = ap.parse_args(argv)
    tune_for_frames()
    from .bags import make_bag
    from .bags.evaluate import evaluate_bag
    from .bags.read import BagFrames
    from .engine import Engine
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    print("== 1. Engines of the default model: FP32 and W8A8 (PTQ4RIS, calibration/W8A8.yaml"
          + (")" if a.reconstruct else "; block reconstruction left out for speed: --reconstruct for all of it)"))
    engines = build_engines(Path(a.engines), a.calib, a.reconstruct)

    print(f"\n== 2. A rosbag of {a.frames} test-scene frames (640x480 bgr8, 10 Hz, a new command every 3 frames)")
    bag = Path(a.bag)
    try:
        with BagFrames(bag) as f:
            reuse = f.n_images == a.frames
    except Exception:  # noqa: BLE001 - anything wrong with an old bag: make a new one
        reuse = False
    if reuse:
        print(f"  reusing {bag}")
    else:
        make_bag(bag, n=a.frames, overwrite=True)
        print(f"  wrote {bag}")

    from .engine.cpu import cpu_int8
    rows = {}
    print(f"\n== 3. Offline evaluation on the bag (2 threads)\n  CPU: {cpu_int8().describe()}")
    for name, folder in engines.items():
        eng = Engine.load(folder)
        print(f"  {name}: {eng.status()}")
        s = evaluate_bag(bag, eng, out=out / f"offline_{name.lower()}", progress=False)
        rows[name] = {"size_mb": engine_size_mb(folder), "backend": eng.runtime, "target": eng.target, "offline": s}
        print(f"  {name} on {eng.runtime}: mIoU {100 * s['accuracy']['mIoU']:.2f}, segment() p50 "
              f"{s['latency_ms']['segment']['p50']:.1f} ms")
        if name == "W8A8":
            sim = simulated_on_bag(calibrated_folder(engines), eng.target, bag)["accuracy"]["mIoU"]
            rows[name]["simulated_mIoU"] = sim
            print(f"  W8A8 simulated (PyTorch fake-quant, weights as target {eng.target} stores them): mIoU "
                  f"{100 * sim:.2f}; the engine is {100 * (s['accuracy']['mIoU'] - sim):+.2f} from it")
            check_against_simulation(name, eng, s["accuracy"]["mIoU"], sim)

    if not a.no_replay:
        from .bags.replay import replay_bag
        print("\n== 4. Live replay through ptq4ris_node over DDS (loopback only), at the recorded rate")
        domain = int(os.environ.get("ROS_DOMAIN_ID", 0)) or 42
        for name, folder in engines.items():
            s = replay_bag(bag, str(folder), out / f"replay_{name.lower()}", domain_id=domain)
            rows[name]["live"] = s
            print(f"  {name}: mIoU {100 * s['accuracy']['mIoU']:.2f}, end-to-end p50 "
                  f"{s['latency_ms']['end_to_end']['p50']:.1f} ms, dropped {s['dropped']} of {s['frames_sent']}")

    print("\n== 5. FP32 against W8A8 on the same bag")
    head = "| engine | runtime | size (MB) | offline mIoU | live mIoU | segment() p50 (ms) | end-to-end p50 (ms) | dropped |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        live = r.get("live")
        lines.append(f"| {name} | {r['backend']} | {r['size_mb']:.1f} | {100 * r['offline']['accuracy']['mIoU']:.2f} | "
                     + (f"{100 * live['accuracy']['mIoU']:.2f}" if live else "–") + " | "
                     + f"{r['offline']['latency_ms']['segment']['p50']:.1f} | "
                     + (f"{live['latency_ms']['end_to_end']['p50']:.1f} | {live['dropped']}" if live else "– | –") + " |")
    fp, q = rows["FP32"], rows["W8A8"]
    ratio = (f"W8A8 is {fp['size_mb'] / q['size_mb']:.1f}x smaller and its segment() is "
             f"{fp['offline']['latency_ms']['segment']['p50'] / q['offline']['latency_ms']['segment']['p50']:.2f}x "
             f"as fast; mIoU {100 * (q['offline']['accuracy']['mIoU'] - fp['offline']['accuracy']['mIoU']):+.2f} points.")
    table = "\n".join(lines)
    print(table)
    print(ratio)
    (out / "summary.md").write_text(f"# make demo\n\n{table}\n\n{ratio}\n\nReports: "
                                    + ", ".join(sorted(p.name for p in out.iterdir() if p.is_dir())) + "\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(
        {k: {"size_mb": r["size_mb"], "backend": r["backend"], "target": r["target"], "offline": r["offline"],
             "simulated_mIoU": r.get("simulated_mIoU"), "live": r.get("live")} for k, r in rows.items()}, indent=1, default=str), encoding="utf-8")
    print(f"\nreports: {out}/summary.md and {out}/*/report.md  ({time.perf_counter() - t_start:.0f} s in all)")


if __name__ == "__main__":
    main()
