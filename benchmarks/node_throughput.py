"""ptq4ris_node under a 30 Hz camera: output rate, arrival-to-publication latency, memory over a long run.

    .venv/bin/python benchmarks/node_throughput.py --engine ENGINE [--backend auto] [--frames 2000] [--json out.json]

1. Times the engine's own segment() on a 640x480 frame in this process (the reference), back to back and
   paced at the camera's rate (a runtime's threads sleep between paced calls).
2. Starts ptq4ris_node on the engine and a camera process (both ROS 2, loopback only, own domain)
   that publishes 640x480 bgr8 frames at 30 Hz with unique stamps, and records every mask and result.
3. Reports the node's output rate against 1 / segment() p50, its latency p50 (the image's arrival in the node
   to the mask's publication) against segment() p50, the end-to-end p50 (the camera's publish to the mask's
   receipt: both DDS hops included), its resident memory at frame 100 and at the end, and any mask whose
   header or size is wrong.
"""
import argparse
import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
VENV_BIN = Path(sys.executable).parent


def node_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1000
    return float("nan")


def rss_breakdown_mb(pid: int, top: int = 25) -> dict:
    """Resident memory by mapping (heap, anonymous, each shared library), the largest ``top``: what to cut."""
    totals, name = {}, "[anon]"
    for line in open(f"/proc/{pid}/smaps"):
        head = line.split()
        if re.match(r"[0-9a-f]+-[0-9a-f]+$", head[0]):  # a mapping's first line: range perms offset dev inode [path]
            name = head[5].rsplit("/", 1)[-1] if len(head) > 5 else "[anon]"
        elif head[0] == "Rss:":
            totals[name] = totals.get(name, 0) + int(head[1]) / 1000
    return {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:top]}


def _percentiles(values) -> dict:
    import numpy as np
    if not values:  # no mask came back (e.g. best-effort frames that never arrived)
        return {"p50": float("nan"), "p90": float("nan")}
    return {"p50": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def camera(args):
    """The camera + recorder process (ROS 2)."""
    import ros_wheels_bootstrapper  # noqa: F401  (re-executes once with the ROS library path)
    import threading

    import numpy as np
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from ptq4ris_core.data import SceneGenerator
    from ptq4ris_ros.transport import CAMERA_PROFILE, use_profile
    profile = None if args.camera_default_transport else use_profile(CAMERA_PROFILE)  # as README asks of a camera driver
    rclpy.init()
    node = rclpy.create_node("ptq4ris_bench_camera")
    reliability = ReliabilityPolicy.BEST_EFFORT if args.best_effort else ReliabilityPolicy.RELIABLE
    image_pub = node.create_publisher(Image, "image", QoSProfile(depth=1, reliability=reliability,
                                                                  history=HistoryPolicy.KEEP_LAST))
    cmd_pub = node.create_publisher(String, "command", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                                                   durability=DurabilityPolicy.TRANSIENT_LOCAL))
    masks, results, lock = [], {}, threading.Lock()

    def on_mask(m):
        with lock:
            masks.append((m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m.header.frame_id, m.height, m.width,
                          time.monotonic()))

    def on_result(m):
        r = json.loads(m.data)
        results[r["stamp"]["sec"] * 10**9 + r["stamp"]["nanosec"]] = (r["latency_ms"], r["engine_ms"])

    node.create_subscription(Image, "mask", on_mask, 100)
    node.create_subscription(String, "result", on_result, 100)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [rclpy.spin_once(node, timeout_sec=0.05) for _ in iter(stop.is_set, True)])
    spinner.start()
    gen = SceneGenerator(640, 480)
    scene = gen.sample("test", 9_500)
    frames = [np.ascontiguousarray(gen.sample("test", 9_500 + i).image[..., ::-1]) for i in range(30)]
    cmd_pub.publish(String(data=scene.text))
    end = time.monotonic() + 60
    while time.monotonic() < end and image_pub.get_subscription_count() == 0:
        time.sleep(0.05)
    time.sleep(1.0)
    sent, sent_at, rss = {}, {}, {}
    t0 = time.monotonic()
    for i in range(args.frames):
        due = t0 + i / args.hz
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        m = Image()
        stamp = 1_000_000_000 * 1000 + i * 10**6
        m.header.stamp.sec, m.header.stamp.nanosec = stamp // 10**9, stamp % 10**9
        m.header.frame_id = f"cam_{i}"
        m.height, m.width, m.encoding, m.step = 480, 640, "bgr8", 640 * 3
        m.data = frames[i % 30].tobytes()
        sent[stamp] = m.header.frame_id
        sent_at[stamp] = time.monotonic()
        image_pub.publish(m)
        if i == min(100, args.frames // 2):  # after warm-up: frame 100 (or half of a short run)
            rss[f"frame_{i}"] = node_rss_mb(args.node_pid)
    t_end = time.monotonic()
    time.sleep(1.0)
    rss["end"] = node_rss_mb(args.node_pid)
    rss["end_by_mapping"] = rss_breakdown_mb(args.node_pid)
    stop.set()
    spinner.join()
    with lock:
        got = list(masks)
    in_window = [g for g in got if g[4] <= t_end + 0.2]
    wrong = [g for g in got if sent.get(g[0]) != g[1] or (g[2], g[3]) != (480, 640)]
    lat = [results[g[0]][0] for g in got if g[0] in results]
    eng = [results[g[0]][1] for g in got if g[0] in results]
    e2e = [(g[4] - sent_at[g[0]]) * 1000 for g in got if g[0] in sent_at]  # camera's publish to the mask's receipt
    print("CAMERA " + json.dumps({
        "frames_sent": len(sent), "masks": len(got), "seconds": t_end - t0,
        "output_hz": len(in_window) / (t_end - t0), "wrong_header_or_size": len(wrong),
        "node_latency_ms": _percentiles(lat), "node_engine_ms": _percentiles(eng), "end_to_end_ms": _percentiles(e2e),
        "camera_fastdds_profile": profile, "rss_mb": rss}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--hz", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2, help="engine threads, for the reference timing and the node alike "
                    "(default 2, the node's default)")
    ap.add_argument("--backend", default="auto", help="runtime for the reference timing and the node alike, "
                    "e.g. onnxruntime, openvino:f32 (default: auto, as the node)")
    ap.add_argument("--camera-default-transport", action="store_true",
                    help="the camera process keeps Fast DDS's default 512 KB shared-memory segments (a 640x480 frame "
                    "does not fit) instead of loading ptq4ris_ros's profile for camera-sized messages")
    ap.add_argument("--best-effort", action="store_true",
                    help="the camera publishes best effort and the node subscribes so (frames may be lost: see masks)")
    ap.add_argument("--runtime-only", action="store_true",
                    help="start the node as on a runtime-only install: torch and the full install's packages absent "
                    "(tests/runtime_only/sitecustomize.py)")
    ap.add_argument("--json")
    ap.add_argument("--camera", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--node-pid", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    from ptq4ris_core.tuning import tune_for_frames
    tune_for_frames()  # as the node does
    if a.camera:
        return camera(a)
    import numpy as np

    from ptq4ris_core.data import SceneGenerator
    from ptq4ris_core.engine import Engine
    eng = Engine.load(a.engine, backend=a.backend, threads=a.threads)
    s = SceneGenerator(640, 480).sample("test", 9_500)
    for _ in range(20):
        eng.segment(s.image, s.text)
    from paced_segment import segment_p50  # this folder's own helper
    ref = segment_p50(eng, s.image, s.text, 200)
    paced = segment_p50(eng, s.image, s.text, 200, a.hz)
    backend = eng.runtime
    del eng
    env = {k: v for k, v in os.environ.items() if not k.startswith("_ROS_WHEELS")}
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(200 + os.getpid() % 30), PYTHONUNBUFFERED="1")
    node_env = dict(env)
    if a.runtime_only:
        node_env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent.parent / "tests" / "runtime_only")]
                                                 + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    node = subprocess.Popen([str(VENV_BIN / "ptq4ris_node"), "--ros-args", "-p", f"engine_path:={a.engine}",
                             "-p", f"threads:={a.threads}", "-p", f"backend:={a.backend}", "-p", "diagnostics_period_s:=30.0",
                             "-p", f"image_reliability:={'best_effort' if a.best_effort else 'reliable'}"],
                            env=node_env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)
        r = subprocess.run([sys.executable, str(HERE), "--camera", "--engine", a.engine, "--frames", str(a.frames),
                            "--hz", str(a.hz), "--node-pid", str(node.pid)]
                           + (["--camera-default-transport"] if a.camera_default_transport else [])
                           + (["--best-effort"] if a.best_effort else []),
                           env=env, capture_output=True, text=True)
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(15)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("CAMERA ")]
    if not line:
        sys.exit(f"camera process failed:\n{r.stderr[-3000:]}")
    cam = json.loads(line[-1][7:])
    res = {"engine": a.engine, "backend": backend, "node_runtime_only": a.runtime_only, "segment_p50_ms": ref, "segment_paced_p50_ms": paced,
           "camera_hz": a.hz, **cam}
    res["rate_ratio"] = cam["output_hz"] / min(a.hz, 1000 / ref)  # the node can at best match the camera
    res["latency_ratio"] = cam["node_latency_ms"]["p50"] / ref
    res["latency_ratio_paced"] = cam["node_latency_ms"]["p50"] / paced  # ROS's own share at the camera's pace
    warm = next(v for k, v in cam["rss_mb"].items() if k.startswith("frame_"))
    res["rss_growth"] = cam["rss_mb"]["end"] / warm - 1
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
