"""A test peer for ptq4ris_node, run as its own process: publishes scenes and commands over real DDS,
records what the node answers, prints one JSON line. Usage: ros_client.py SCENARIO [ARGS JSON]."""
import ros_wheels_bootstrapper  # noqa: F401  (sets the library path, re-executes once)

import json
import sys
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool

from ptq4ris_core.data import SceneGenerator
from ptq4ris_core.metrics import iou

IMAGE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
COMMAND_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Peer:
    def __init__(self):
        rclpy.init()
        self.n = rclpy.create_node("ptq4ris_test_peer")
        self.masks, self.results = [], []
        self.n.create_subscription(Image, "mask", self.masks.append, 50)
        self.n.create_subscription(String, "result", lambda m: self.results.append(json.loads(m.data)), 50)
        self.diagnostics = {}  # the last diagnostics' key/values
        self.n.create_subscription(DiagnosticArray, "diagnostics", lambda m: self.diagnostics.update(
            {kv.key: kv.value for st in m.status for kv in st.values}), 10)
        self.image_pub = self.n.create_publisher(Image, "image", IMAGE_QOS)
        self.comp_pub = self.n.create_publisher(CompressedImage, "image/compressed", IMAGE_QOS)
        self.command_pub = self.n.create_publisher(String, "command", COMMAND_QOS)
        self.seq = 0

    def spin(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.n, timeout_sec=0.02)

    def wait_for(self, pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            rclpy.spin_once(self.n, timeout_sec=0.02)
        return pred()

    def wait_for_node(self, timeout=20):
        return self.wait_for(lambda: self.image_pub.get_subscription_count() > 0, timeout)

    def image(self, rgb, encoding="rgb8", frame="cam"):
        m = Image()
        self.seq += 1
        m.header.frame_id = f"{frame}_{self.seq}"
        m.header.stamp.sec, m.header.stamp.nanosec = 1000 + self.seq, 123
        m.height, m.width = rgb.shape[:2]
        conv = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb.mean(2).astype(np.uint8),
                "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
                "bgra8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)])}[encoding]
        m.encoding = encoding
        m.step = m.width * (1 if conv.ndim == 2 else conv.shape[2])
        m.data = np.ascontiguousarray(conv).tobytes()
        return m

    def send(self, msg, settle=0.0):
        (self.comp_pub if isinstance(msg, CompressedImage) else self.image_pub).publish(msg)
        self.spin(settle)

    def call(self, srv_type, name, req, timeout=10):
        cli = self.n.create_client(srv_type, name)
        if not cli.wait_for_service(timeout_sec=timeout):
            return None
        fut = cli.call_async(req)
        self.wait_for(fut.done, timeout)
        return fut.result()


def scenes(n, w=320, h=240, offset=0):
    gen = SceneGenerator(w, h)
    return [gen.sample("test", offset + i) for i in range(n)]


def scenario_serve(p, args):
    """Command sent before the node starts (late joiner); scenes in every encoding; masks vs ground truth."""
    if args.get("best_effort"):  # a camera that publishes best effort (the node must subscribe so too)
        p.image_pub = p.n.create_publisher(Image, "image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                                                                        history=HistoryPolicy.KEEP_LAST))
    p.command_pub.publish(String(data=args.get("first_command", "the red circle")))
    out = {"node_seen": p.wait_for_node(args.get("wait", 60))}
    p.spin(1.0)
    sent, ious = {}, []
    for i, s in enumerate(scenes(args.get("n", 12), args.get("w", 320), args.get("h", 240))):
        p.command_pub.publish(String(data=s.text))
        p.spin(0.3)
        enc = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"][i % 5] if args.get("encodings") else "rgb8"
        msg = p.image(s.image, enc)
        sent[msg.header.frame_id] = (s, msg, enc)
        before = len(p.masks)
        p.send(msg)
        p.wait_for(lambda: len(p.masks) > before, args.get("frame_timeout", 20))
    p.spin(1.0)
    checks = []
    results = {r["frame_id"]: r for r in p.results}
    for m in p.masks:
        if m.header.frame_id not in sent:
            continue
        s, msg, enc = sent[m.header.frame_id]
        mask = np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width)
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1] if len(xs) else [0, 0, 0, 0]
        r = results.get(m.header.frame_id, {})
        checks.append({"frame": m.header.frame_id, "encoding": enc, "stamp_ok": (m.header.stamp.sec, m.header.stamp.nanosec)
                       == (msg.header.stamp.sec, msg.header.stamp.nanosec), "size_ok": (m.height, m.width) == s.mask.shape,
                       "mono8": m.encoding == "mono8", "values_ok": bool(set(np.unique(mask)) <= {0, 255}),
                       "iou": iou(mask > 0, s.mask)[0] if enc != "mono8" else None,
                       "result_ok": r.get("bbox") == box and r.get("pixels") == len(xs)})
    out.update(sent=len(sent), answered=len(checks), checks=checks, results=len(p.results),
               diagnostics=p.diagnostics)
    return out


def scenario_flood(p, args):
    """Frames as fast as the node takes them, for ``seconds``, under one command (a node is stopped meanwhile)."""
    p.command_pub.publish(String(data="the red circle"))
    p.wait_for_node(args.get("wait", 60))
    frames = [p.image(s.image) for s in scenes(4, 320, 240)]
    end = time.time() + args.get("seconds", 10)
    sent = 0
    while time.time() < end:
        p.send(frames[sent % 4])
        sent += 1
        p.spin(0.01)
    return {"sent": sent, "masks": len(p.masks)}


def scenario_commands(p, args):
    """Commands from two topics (typed and a speech recogniser's JSON with confidence); a wrong-typed topic."""
    voice = p.n.create_publisher(String, "voice/command", COMMAND_QOS)
    wrong = p.n.create_publisher(Image, "ui/command", IMAGE_QOS)  # a command topic that carries images
    p.wait_for_node(args.get("wait", 60))
    frame = p.image(scenes(1, 160, 120)[0].image)
    said = []

    def command_in_force():
        before = len(p.results)
        p.send(p.image(scenes(1, 160, 120)[0].image))
        p.wait_for(lambda: len(p.results) > before, 20)
        said.append(p.results[-1]["command"] if len(p.results) > before else None)

    p.command_pub.publish(String(data="the red circle"))
    p.spin(0.5)
    command_in_force()
    voice.publish(String(data=json.dumps({"text": "the blue star", "confidence": 0.9})))
    p.spin(0.5)
    command_in_force()
    voice.publish(String(data=json.dumps({"text": "the green square", "confidence": 0.2})))  # too unsure
    p.spin(0.5)
    command_in_force()
    p.command_pub.publish(String(data="the yellow ring"))  # the typed topic again: latest wins
    p.spin(0.5)
    command_in_force()
    wrong.publish(frame)
    p.spin(float(args.get("diagnostics_wait", 3.0)))
    return {"in_force": said, "diagnostics": p.diagnostics}


def scenario_bad_inputs(p, args):
    """Every bad input, spaced so none is overwritten in the queue; then a good frame must still be answered."""
    out = {"node_seen": p.wait_for_node(args.get("wait", 60))}
    p.command_pub.publish(String(data="the red circle"))
    p.spin(1.0)
    s = scenes(1)[0]
    good = lambda: p.image(s.image)  # noqa: E731
    bad = []
    m = good(); m.encoding = "32FC1"; bad.append(m)
    m = good(); m.encoding = "yuv422"; bad.append(m)
    m = good(); m.step = 5; bad.append(m)
    m = good(); m.data = m.data[: len(m.data) // 2]; bad.append(m)
    m = good(); m.width = 0; m.step = 0; m.data = b""; bad.append(m)
    big = Image(); big.height = big.width = 8000; big.encoding = "mono8"; big.step = 8000
    big.data = bytes(8000 * 8000); big.header.frame_id = "huge"; bad.append(big)
    for b in bad:
        p.send(b, 0.4)
    c = CompressedImage(); c.format = "jpeg"; c.data = b"\xff\xd8garbage"
    p.send(c, 0.4)  # ignored unless the node is on compressed transport
    for text in ["", "   ", "x" * 10000, "the \x07red\x1b circle"]:
        p.command_pub.publish(String(data=text))
        p.spin(0.2)
    for _ in range(100):  # a command flood: 100 in one second
        p.command_pub.publish(String(data="the blue star"))
        p.spin(0.01)
    t0 = time.monotonic()
    n_flood = 0
    while time.monotonic() - t0 < 1.0:  # an image flood at about 200 Hz
        p.send(good(), 0.0)
        n_flood += 1
        time.sleep(0.005)
    p.spin(2.0)
    before = len(p.masks)
    final = good()
    p.send(final)
    ok = p.wait_for(lambda: any(m.header.frame_id == final.header.frame_id for m in p.masks), 20)
    out.update(still_serving=ok, flood_sent=n_flood, masks_during=before)
    return out


def scenario_lifecycle(p, args):
    """Unconfigured at start (autostart false): configure, activate, enable service, deactivate, cleanup."""
    out = {"node_seen": p.wait_for(lambda: p.n.count_publishers("mask") > 0 or p.n.count_subscribers("command") >= 0, 5)}
    name = args["node"]
    st = p.call(GetState, f"{name}/get_state", GetState.Request(), 30)
    out["initial"] = st.current_state.label if st else None
    s = scenes(1)[0]
    p.command_pub.publish(String(data=s.text))

    def transition(tid):
        r = p.call(ChangeState, f"{name}/change_state", ChangeState.Request(transition=__import__(
            "lifecycle_msgs.msg", fromlist=["Transition"]).Transition(id=tid)), 30)
        return bool(r and r.success)

    def frames_answered(k=3):
        before = len(p.masks)
        for _ in range(k):
            p.send(p.image(s.image), 0.5)
        p.spin(1.0)
        return len(p.masks) - before

    out["configure"] = transition(1)
    out["answered_inactive"] = frames_answered()
    out["activate"] = transition(3)
    p.wait_for_node(10)
    p.spin(1.0)
    out["answered_active"] = frames_answered()
    r = p.call(SetBool, f"{name}/enable", SetBool.Request(data=False))
    out["disable_ok"] = bool(r and r.success)
    out["answered_disabled"] = frames_answered()
    r = p.call(SetBool, f"{name}/enable", SetBool.Request(data=True))
    out["answered_enabled"] = frames_answered()
    out["deactivate"] = transition(4)
    out["answered_deactivated"] = frames_answered()
    out["cleanup"] = transition(2)
    st = p.call(GetState, f"{name}/get_state", GetState.Request())
    out["final"] = st.current_state.label if st else None
    return out


def scenario_compressed(p, args):
    """CompressedImage transport: a JPEG scene is answered at its size; a corrupt one is refused."""
    from ptq4ris_core.ros_images import jpeg_bytes
    out = {"node_seen": p.wait_for(lambda: p.comp_pub.get_subscription_count() > 0, args.get("wait", 60))}
    s = scenes(1, offset=5)[0]
    p.command_pub.publish(String(data=s.text))
    p.spin(1.0)
    bad = CompressedImage(); bad.format = "jpeg"; bad.data = b"\xff\xd8 not a jpeg"
    p.send(bad, 0.5)
    c = CompressedImage(); c.format = "jpeg"; c.header.frame_id = "jpeg_1"
    c.data = jpeg_bytes(s.image)
    p.send(c)
    ok = p.wait_for(lambda: any(m.header.frame_id == "jpeg_1" for m in p.masks), 20)
    m = next((m for m in p.masks if m.header.frame_id == "jpeg_1"), None)
    out.update(answered=ok, size_ok=bool(m and (m.height, m.width) == s.mask.shape))
    return out


def scenario_state(p, args):
    st = p.call(GetState, f"{args['node']}/get_state", GetState.Request(), 30)
    return {"state": st.current_state.label if st else None}


if __name__ == "__main__":
    scenario = sys.argv[1]
    args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    peer = Peer()
    try:
        result = globals()[f"scenario_{scenario}"](peer, args)
    finally:
        peer.n.destroy_node()
        rclpy.try_shutdown()
    print("RESULT " + json.dumps(result))
