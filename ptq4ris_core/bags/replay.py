"""``ptq4ris bag replay``: replay a bag into the live node over DDS and score what it publishes.

Starts ``ptq4ris_node`` on the engine (unless ``launch=False``: a node already running), plays the
bag with ``ptq4ris_bag_player`` (a ROS 2 process of its own), then scores the recorded masks
against the bag's ground truth, frame by header stamp. A frame the node never answered is dropped;
a mask whose stamp is not a frame of the bag is counted as a wrong header.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import PTQ4RISError
from .errors import BagError
from .read import BagFrames
from .report import BagReport


class ReplayError(PTQ4RISError, RuntimeError):
    """The node or the player did not run; the message points to its log."""


def _tool(name: str) -> str:
    found = shutil.which(name) or (str(Path(sys.executable).parent / name)
                                   if (Path(sys.executable).parent / name).exists() else None)
    if not found:
        raise ReplayError(f"{name} is not installed; install the ROS 2 package: pip install -e ros2_ws/src/ptq4ris_ros")
    return found


def ros_environment(domain_id: int | None = None) -> dict:
    """This process's environment for the ROS children; loopback discovery unless the user chose otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("_ROS_WHEELS")}
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env


def _load_record(path: Path) -> dict:
    r = np.load(path)
    out = {}
    offs = r["bit_offsets"]
    for i, s in enumerate(r["stamps"]):
        h, w = (int(v) for v in r["shapes"][i])
        mask = np.unpackbits(r["bits"][offs[i]:offs[i + 1]], count=h * w).reshape(h, w) * np.uint8(255)
        out[int(s)] = {"mask": mask, "e2e_ms": (r["recv_s"][i] - r["sent_s"][i]) * 1000,
                       "engine_ms": float(r["engine_ms"][i]), "node_ms": float(r["node_latency_ms"][i])}
    return {"masks": out, "sent": set(int(s) for s in r["sent_stamps"])}


def replay_bag(bag, engine: str | None, out, rate: float = 1.0, launch: bool = True, image_topic=None,
               command_topic=None, gt_topic=None, command=None, mask_topic="/mask", result_topic="/result",
               domain_id: int | None = None, wait: float = 60.0, node_params: dict | None = None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if rate <= 0:
        raise BagError(f"--rate must be positive, got {rate}")
    with BagFrames(bag, image_topic=image_topic, command_topic=command_topic, gt_topic=gt_topic,
                   command=command) as frames:
        topics = (frames.image_topic, frames.image_type, frames.command_topic)
    env = ros_environment(domain_id)
    node = None
    if launch:
        if not engine:
            raise ReplayError("give --engine to launch the node, or --no-launch to use a running one")
        compressed = topics[1].endswith("CompressedImage")
        args = [_tool("ptq4ris_node"), "--ros-args", "-p", f"engine_path:={engine}",
                "-p", f"image_transport:={'compressed' if compressed else 'raw'}",
                "-r", f"{'image/compressed' if compressed else 'image'}:={topics[0]}",
                "-r", f"command:={topics[2] or '/command'}", "-r", f"mask:={mask_topic}", "-r", f"result:={result_topic}"]
        for k, v in (node_params or {}).items():
            args += ["-p", f"{k}:={v}"]
        node_log = open(out / "node.log", "w")
        node = subprocess.Popen(args, env=env, stdout=node_log, stderr=subprocess.STDOUT)
    record = out / "replay_record.npz"
    player = [_tool("ptq4ris_bag_player"), str(bag), "--record", str(record), "--rate", str(rate),
              "--image-topic", topics[0], "--mask-topic", mask_topic, "--result-topic", result_topic,
              "--wait", str(wait)]
    if topics[2]:
        player += ["--command-topic", topics[2]]
    if command:
        player += ["--command", command]
    try:
        t = time.perf_counter()
        r = subprocess.run(player, env=env, capture_output=True, text=True)
        play_wall = time.perf_counter() - t
        (out / "player.log").write_text(r.stdout + r.stderr, encoding="utf-8")
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("REPLAY ")]
        if r.returncode != 0 or not lines:
            last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            hint = f"; node log: {out / 'node.log'}" if launch else ""
            raise ReplayError(f"the bag player failed: {last} (log: {out / 'player.log'}{hint})")
        played = json.loads(lines[-1][7:])
    finally:
        if node is not None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()
    rec = _load_record(record)
    report = BagReport()
    answered, wrong_size = 0, 0
    with BagFrames(bag, image_topic=image_topic, command_topic=command_topic, gt_topic=gt_topic,
                   command=command) as frames:
        bag_stamps = set()
        for f in frames:
            bag_stamps.add(f.stamp_ns)
            got = rec["masks"].get(f.stamp_ns)
            if got is None:
                continue
            answered += 1
            mask = got["mask"]
            if mask.shape != f.image.shape[:2]:
                wrong_size += 1
                continue
            report.add(f.index, f.stamp_ns, f.command, mask, f.gt, f.image, end_to_end=got["e2e_ms"],
                       node=got["node_ms"], engine=got["engine_ms"])
        skipped = dict(frames.skipped)
    unmatched = len(set(rec["masks"]) - bag_stamps)
    summary = report.summary(bag=str(bag), engine=engine or "(running node)", rate=rate,
                             frames_sent=played["frames_sent"], frames_answered=answered,
                             dropped=played["frames_sent"] - len(rec["masks"]), wrong_header=unmatched,
                             wrong_size=wrong_size, skipped=skipped, play_s=played["play_s"],
                             wall_s=round(play_wall, 2))
    report.write(out, summary, f"Live replay through ptq4ris_node: {Path(bag).name} at rate {rate}")
    summary["report"] = str(out)
    return summary
