"""``ptq4ris_bag_player``: publish a bag's images and commands over DDS with their recorded timing (scaled by
``--rate``), record what the node publishes, and save it for ``ptq4ris bag replay`` to score.

Images are published as the bag's own serialized bytes (as ``ros2 bag play`` does), so what the node
receives is exactly what was recorded. Masks are matched to frames by header stamp.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time


def build_parser():
    ap = argparse.ArgumentParser(prog="ptq4ris_bag_player", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag")
    ap.add_argument("--record", required=True, help="where to save what the node published (.npz)")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0 = recorded timing)")
    ap.add_argument("--image-topic")
    ap.add_argument("--command-topic")
    ap.add_argument("--command", help="one command for the whole bag (for bags without commands)")
    ap.add_argument("--command-out", default="/command", help="topic for --command (default /command)")
    ap.add_argument("--mask-topic", default="/mask")
    ap.add_argument("--result-topic", default="/result")
    ap.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the node's subscriptions")
    ap.add_argument("--drain", type=float, default=5.0, help="seconds to wait for masks after the last frame")
    return ap


def main(argv=None):
    from .node import _bootstrap_ros_wheels
    _bootstrap_ros_wheels()
    a = build_parser().parse_args(argv)
    from ptq4ris_core.tuning import tune_for_frames

    from .transport import CAMERA_PROFILE, use_profile
    tune_for_frames()  # as the node: memory kept between frames
    use_profile(CAMERA_PROFILE)  # the bag's frames leave this process: they must fit its shared memory
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String

    from ptq4ris_core.bags import BagError, open_bag

    try:
        bag = open_bag(a.bag, image_topic=a.image_topic, command_topic=a.command_topic, command=a.command)
    except BagError as e:
        print(f"ptq4ris_bag_player: error: {e}", file=sys.stderr)
        return 2
    # Everything to publish, in log order, loaded before playing so that playing costs no CPU.
    events = []
    events += [(t, "command", text) for t, text in bag.commands()]
    images = list(bag.raw_images())
    events += [(log_ns, "image", (stamp, bytes(raw))) for _, log_ns, stamp, _, raw in images]
    events.sort(key=lambda e: (e[0], e[1] != "command"))
    bag.close()

    rclpy.init()
    node = rclpy.create_node("ptq4ris_bag_player")
    image_cls = CompressedImage if bag.image_type.endswith("CompressedImage") else Image
    image_pub = node.create_publisher(image_cls, bag.image_topic,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                                 history=HistoryPolicy.KEEP_LAST))
    command_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    command_pub = node.create_publisher(String, bag.command_topic or a.command_out, command_qos)
    lock = threading.Lock()
    got, results = {}, {}  # stamp → mask; stamp → (engine ms, node latency ms)

    def on_mask(msg):
        t = time.monotonic()
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        with lock:
            got[stamp] = (t, msg.height, msg.width, bytes(msg.data), msg.header.frame_id)

    def on_result(msg):
        try:
            r = json.loads(msg.data)
            results[r["stamp"]["sec"] * 10**9 + r["stamp"]["nanosec"]] = (r.get("engine_ms"), r.get("latency_ms"))
        except (ValueError, KeyError, TypeError):
            return  # not one of ptq4ris_node's results: the mask alone still scores the frame

    node.create_subscription(Image, a.mask_topic, on_mask, 100)
    node.create_subscription(String, a.result_topic, on_result, 100)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    stop = threading.Event()

    def spin():  # our own loop, so that it ends (and is joined) before ROS shuts down
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    out = {"bag": a.bag, "rate": a.rate, "image_topic": bag.image_topic, "frames_in_bag": len(images)}
    end = time.monotonic() + a.wait
    while time.monotonic() < end and (image_pub.get_subscription_count() == 0 or command_pub.get_subscription_count() == 0):
        time.sleep(0.05)
    if image_pub.get_subscription_count() == 0:
        print(f"ptq4ris_bag_player: error: nothing subscribes to {bag.image_topic} after {a.wait:.0f} s; "
              "is the node running and active, in this ROS_DOMAIN_ID?", file=sys.stderr)
        stop.set()
        spinner.join()
        return 3
    time.sleep(1.0)  # let discovery settle both ways (the node's mask publisher to our subscription)
    if a.command:
        command_pub.publish(String(data=a.command))
        time.sleep(0.2)

    sent = {}
    t0_bag = events[0][0] if events else 0
    t0 = time.monotonic()
    for log_ns, kind, payload in events:
        due = t0 + (log_ns - t0_bag) / 1e9 / a.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if kind == "command":
            command_pub.publish(String(data=payload))
        else:
            stamp, raw = payload
            sent[stamp] = time.monotonic()
            image_pub.publish(raw)
    last_count, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < a.drain:
        with lock:
            n = len(got)
        if n >= len(sent):
            break
        if n != last_count:
            last_count, quiet_since = n, time.monotonic()
        time.sleep(0.05)
    time.sleep(0.2)
    stop.set()
    spinner.join()

    with lock:
        stamps = sorted(got)
        rec = {"stamps": np.array(stamps, np.int64),
               "recv_s": np.array([got[s][0] for s in stamps]), "sent_s": np.array([sent.get(s, np.nan) for s in stamps]),
               "shapes": np.array([got[s][1:3] for s in stamps], np.int64).reshape(-1, 2),
               "engine_ms": np.array([results.get(s, (None, None))[0] for s in stamps], float),
               "node_latency_ms": np.array([results.get(s, (None, None))[1] for s in stamps], float),
               "frame_ids": np.array([got[s][4] for s in stamps], dtype=str),
               "sent_stamps": np.array(sorted(sent), np.int64)}
        bits = [np.packbits(np.frombuffer(got[s][3], np.uint8) > 127) for s in stamps]
        rec["bit_offsets"] = np.cumsum([0] + [b.size for b in bits]).astype(np.int64)
        rec["bits"] = np.concatenate(bits) if bits else np.zeros(0, np.uint8)
    np.savez_compressed(a.record, **rec)
    out.update(frames_sent=len(sent), masks_received=len(stamps), play_s=round(time.monotonic() - t0, 2))
    print("REPLAY " + json.dumps(out), flush=True)
    ex.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
