"""``ptq4ris_node``: camera images and language commands in, the referred object's mask out.

A managed (lifecycle) node: configure loads the engine, activate subscribes, deactivate stops
work, cleanup frees the engine. Only the latest image is kept; the engine runs on a worker
thread, so a slow frame never builds a queue (replaced frames are counted as dropped).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


def _bootstrap_ros_wheels():
    """In a plain venv, ROS 2 comes from PyPI wheels whose libraries need LD_LIBRARY_PATH set
    before start: ros_wheels_bootstrapper re-executes this process once with it. A robot's
    sourced ROS 2 (AMENT_PREFIX_PATH set) needs nothing."""
    if os.environ.get("AMENT_PREFIX_PATH") or os.environ.get("_ROS_WHEELS_BOOTSTRAP_COMPLETE"):
        return
    try:
        import ros_wheels_bootstrapper  # noqa: F401  (re-executes; does not return)
    except ImportError:
        pass


def main(argv=None):
    _bootstrap_ros_wheels()
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from ptq4ris_core.tuning import tune_for_frames

    from .transport import CAMERA_PROFILE, NODE_PROFILE, use_profile
    tune_for_frames()  # a frame's arrays reuse the last frame's memory
    profile = use_profile(NODE_PROFILE)  # masks and overlays as large as a camera frame
    # rclpy's own handler would shut the context down at SIGINT while the worker is still publishing
    # (a false "publisher's context is invalid"); ours stops the worker first, then shuts down.
    args = argv if argv is not None else sys.argv
    problem = params_file_problem(args)
    if problem:
        print(f"ptq4ris_node: error: {problem}", file=sys.stderr)
        return 2
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as e:  # noqa: BLE001 - rcl's argument and parameter errors: one line, no traceback
        print(f"ptq4ris_node: error: ROS could not start with these arguments: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    node = RISNode()
    if profile:
        node.get_logger().info(f"Fast DDS profile for the node's outputs: {profile} (camera drivers load "
                               f"{CAMERA_PROFILE.name}, README)")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not _STOP:  # short waits: a signal is seen within a quarter second
            executor.spin_once(timeout_sec=0.25)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop_worker()
        node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


def params_file_problem(argv) -> str | None:
    """What is wrong with a ``--params-file`` on the command line (missing, unreadable, not YAML), if anything."""
    for flag, value in zip(argv, argv[1:]):
        if flag != "--params-file":
            continue
        path = Path(value)
        if not path.is_file():
            return (f"params file {path} not found; give the node's params file (the package installs one in "
                    "share/ptq4ris_ros/config/params.yaml)")
        try:
            import yaml
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            return f"params file {path} cannot be read as YAML ({e})"
        if not isinstance(data, dict):
            return f"params file {path} holds no parameters (expected '/**: ros__parameters: ...')"
    return None


def command_payload(data: str) -> tuple[str, float | None]:
    """A command message's text and, when its source gives one, its confidence. Plain text is a command;
    a JSON object ``{"text": ..., "confidence": 0.87}`` is how a speech recogniser says how sure it is."""
    if data.lstrip().startswith("{"):
        try:
            obj = json.loads(data)
        except ValueError:
            return data, None
        if isinstance(obj, dict) and isinstance(obj.get("text"), str):
            conf = obj.get("confidence")
            return obj["text"], float(conf) if isinstance(conf, (int, float)) and not isinstance(conf, bool) else None
    return data, None


_STOP = []  # set by SIGINT/SIGTERM; the spin loop looks at it between waits


def _interrupt(signum, frame):
    # Only a flag: an exception raised here could land inside rclpy's C++ message conversion, which
    # turns it into a RuntimeError and a traceback instead of a clean stop.
    _STOP.append(signum)


def _make_node_class():
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rcl_interfaces.msg import ParameterDescriptor
    from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
    from std_msgs.msg import String
    from std_srvs.srv import SetBool

    from ptq4ris_core.frames import bounding_box
    from ptq4ris_core.ros_images import ImageInputError, as_rgb, fill_image, to_pixels
    from .params import NodeParams, validate
    from .stats import FrameStats

    class _RISNode(LifecycleNode):
        def __init__(self):
            super().__init__("ptq4ris_node")
            dyn = ParameterDescriptor(dynamic_typing=True)  # we check types ourselves, with clear messages
            for name, default in vars(NodeParams()).items():
                self.declare_parameter(name, list(default) if isinstance(default, tuple) else default, dyn)
            self.params: NodeParams | None = None
            self.engine = None
            self.stats = FrameStats()
            self.enabled = True
            self._lock = threading.Condition()
            self._latest = None  # (msg, arrival time)
            self._command = None  # (text, arrival time)
            self._worker = None
            self._running = False
            self._said = set()
            self._last_warned = {}
            self._subs = []
            self.create_service(SetBool, "~/enable", self._on_enable)
            self.mask_pub = self.create_lifecycle_publisher(Image, "mask", 10)
            self.overlay_pub = self.create_lifecycle_publisher(Image, "overlay", 10)
            self.result_pub = self.create_lifecycle_publisher(String, "result", 10)
            self.roi_pub = self.create_lifecycle_publisher(RegionOfInterest, "roi", 10)
            self.diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
            self._diag_timer = None
            if self.get_parameter("autostart").value is True:
                if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                    self.trigger_activate()

        # --- logging once -------------------------------------------------------------------
        def _warn_limited(self, text: str, period: float = 2.0):
            """Each distinct problem is logged, a repeating one at most every ``period`` seconds."""
            key = "".join(ch for ch in text if not ch.isdigit())[:80]
            now = time.monotonic()
            if now - self._last_warned.get(key, -1e9) >= period:
                self._last_warned[key] = now
                self.get_logger().warning(text)

        def _once(self, key: str, text: str, level: str = "info"):
            if key not in self._said:
                self._said.add(key)
                getattr(self.get_logger(), level)(text)

        # --- lifecycle ----------------------------------------------------------------------
        def on_configure(self, state):
            values = {n: self.get_parameter(n).value for n in vars(NodeParams())}
            params, problems = validate(values)
            if problems:
                for p in problems:
                    self.get_logger().error(f"parameter problem: {p}")
                self.get_logger().error("not configured: fix the parameters (params file or -p name:=value) and configure again")
                return TransitionCallbackReturn.FAILURE
            try:
                from ptq4ris_core.engine import Engine
                self.engine = Engine.load(params.engine_path, backend=params.backend,
                                          providers=list(params.providers) or None, device=params.device,
                                          threads=params.threads)
            except Exception as e:  # noqa: BLE001 - every load problem becomes one clear log line
                self.get_logger().error(f"cannot load engine '{params.engine_path}': {e}")
                self.get_logger().error("not configured: set engine_path to an engine folder made by 'ptq4ris export' "
                                        "(params file or -p engine_path:=...) and configure again "
                                        "(lifecycle transition 'configure', or restart the node)")
                return TransitionCallbackReturn.FAILURE
            self.engine.text_features.warn = lambda text: self._warn_limited(text)  # the node's log, rate-limited
            self.params = params
            self._diag_timer = self.create_timer(params.diagnostics_period_s, self._diagnostics)
            self.get_logger().info(f"engine loaded: {self.engine.describe()}; {self.engine.status()}; "
                                   f"CPU {self.engine.report()['cpu']}")
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state):
            p = self.params
            image_qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=p.image_depth,
                reliability=ReliabilityPolicy.RELIABLE if p.image_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT)
            # Depth 10: a burst of commands is read in order (each is cheap), none is lost while the
            # executor is busy; transient-local still hands a late joiner the publisher's last command.
            command_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
            itype, topic = (CompressedImage, "image/compressed") if p.image_transport == "compressed" else (Image, "image")
            self._subs = [self.create_subscription(itype, topic, self._on_image, image_qos)]
            self._subs += [self.create_subscription(String, t, self._on_command, command_qos) for t in p.command_topics]
            self._running = True
            self._worker = threading.Thread(target=self._work, name="ptq4ris-engine", daemon=True)
            self._worker.start()
            self.get_logger().info(f"active: {topic} ({p.image_reliability}, depth {p.image_depth}) + "
                                   f"{', '.join(p.command_topics)} → mask")
            return super().on_activate(state)

        def on_deactivate(self, state):
            self.stop_worker()
            for s in self._subs:
                self.destroy_subscription(s)
            self._subs = []
            with self._lock:
                self._latest = None
            return super().on_deactivate(state)

        def on_cleanup(self, state):
            self.engine = None
            if self._diag_timer is not None:
                self.destroy_timer(self._diag_timer)
                self._diag_timer = None
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state):
            self.stop_worker()
            return TransitionCallbackReturn.SUCCESS

        def stop_worker(self):
            with self._lock:
                self._running = False
                self._lock.notify_all()
            if self._worker is not None and self._worker is not threading.current_thread():
                self._worker.join(timeout=5)
            self._worker = None

        # --- inputs -------------------------------------------------------------------------
        def _on_enable(self, request, response):
            self.enabled = bool(request.data)
            if not self.enabled:
                with self._lock:
                    self._latest = None
            response.success = True
            response.message = "enabled" if self.enabled else "disabled: images are ignored until enabled"
            self.get_logger().info(response.message)
            return response

        def _on_command(self, msg):
            data, confidence = command_payload(msg.data)
            floor = self.params.min_command_confidence if self.params else 0.0
            if confidence is not None and confidence < floor:
                self.stats.count("commands_unsure")
                self._warn_limited(f"command with confidence {confidence:.2f} < min_command_confidence={floor} "
                                   "ignored; the previous command stays in force")
                return
            text = "".join(ch for ch in data if ch.isprintable() or ch.isspace())
            if text != data:
                self._warn_limited("command had non-printable characters; they were removed")
            text = " ".join(text.split())
            if not text:
                self._warn_limited("empty or blank command ignored; the previous command stays in force")
                return
            limit = self.params.max_command_chars if self.params else 1000
            if len(text) > limit:
                self._warn_limited(f"command of {len(text)} characters cut to max_command_chars={limit}")
                text = text[:limit]
            with self._lock:
                changed = self._command is None or self._command[0] != text
                self._command = (text, time.monotonic())
            self._said.discard("expired")
            if changed:  # a speech recogniser may churn: at most one line a second (the count is in diagnostics)
                self.stats.count("commands")
                self.get_logger().info(f"command: {text[:120]!r}", throttle_duration_sec=1.0)

        def _on_image(self, msg):
            arrival = time.monotonic()
            self.stats.count("received")
            if not self.enabled:
                self.stats.count("skipped")
                return
            with self._lock:
                if self._latest is not None:
                    self.stats.count("dropped")  # replaced before the worker took it
                self._latest = (msg, arrival)
                self._lock.notify()

        # --- the worker -----------------------------------------------------------------------
        def _take(self):
            with self._lock:
                while self._running and self._latest is None:
                    self._lock.wait(timeout=0.5)
                if not self._running:
                    return None
                item, self._latest = self._latest, None
                return item, self._command

        def _work(self):
            last = 0.0
            while True:
                got = self._take()
                if got is None:
                    return
                (msg, arrival), command = got
                p = self.params
                if p.max_rate_hz > 0:
                    wait = last + 1.0 / p.max_rate_hz - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                        with self._lock:  # a newer frame may have come meanwhile: use it
                            if self._latest is not None:
                                self.stats.count("dropped")
                                (msg, arrival), self._latest = self._latest, None
                if command is None:
                    self._once("nocommand", "no command yet: publishing nothing until one arrives on 'command'")
                    self.stats.count("skipped")
                    continue
                text, when = command
                if p.command_timeout_s > 0 and time.monotonic() - when > p.command_timeout_s:
                    self._once("expired", f"command expired after command_timeout_s={p.command_timeout_s}; waiting for a new one")
                    self.stats.count("skipped")
                    continue
                try:
                    self._process(msg, arrival, text)
                except ImageInputError as e:
                    self.stats.count("rejected")
                    self._warn_limited(f"image rejected: {e}")
                except Exception as e:  # noqa: BLE001 - keep serving whatever one frame does
                    self.stats.count("rejected")
                    self._warn_limited(f"frame failed: {type(e).__name__}: {e}")
                last = time.monotonic()

        def _process(self, msg, arrival, text):
            p = self.params
            pixels, order = to_pixels(msg, p.max_image_pixels)  # a BGR frame stays BGR: the engine swaps after shrinking
            t0 = time.monotonic()
            mask, score = self.engine.segment(pixels, text, threshold=p.mask_threshold, bgr=order == "bgr")
            engine_ms = (time.monotonic() - t0) * 1000
            self.mask_pub.publish(fill_image(Image(), msg.header, mask, "mono8"))
            latency_ms = (time.monotonic() - arrival) * 1000  # arrival to the mask's publication; the rest can follow
            if p.publish_overlay:
                from ptq4ris_core.frames import overlay
                self.overlay_pub.publish(fill_image(Image(), msg.header, overlay(as_rgb(pixels, order), mask), "rgb8"))
            roi = RegionOfInterest()
            roi.x_offset, roi.y_offset, roi.width, roi.height = bounding_box(mask)
            self.roi_pub.publish(roi)
            self.result_pub.publish(String(data=json.dumps({
                "stamp": {"sec": msg.header.stamp.sec, "nanosec": msg.header.stamp.nanosec},
                "frame_id": msg.header.frame_id, "command": text, "score": round(score, 4),
                "bbox": [roi.x_offset, roi.y_offset, roi.width, roi.height], "pixels": int(np.count_nonzero(mask)),
                "latency_ms": round(latency_ms, 2), "engine_ms": round(engine_ms, 2)})))
            self.stats.done(latency_ms, engine_ms)

        # --- diagnostics --------------------------------------------------------------------
        def _check_command_types(self):
            """A command topic that carries another type never matches our String subscription: say so."""
            types = dict(self.get_topic_names_and_types())
            for topic in self.params.command_topics if self.params else ():
                full = self.resolve_topic_name(topic)
                other = [t for t in types.get(full, []) if t != "std_msgs/msg/String"]
                if other:
                    self._once(f"type:{full}", f"command topic {full} carries {', '.join(other)}, not "
                               "std_msgs/msg/String: its messages cannot reach the node; publish the recognised "
                               "text as std_msgs/String (README, 'Voice commands')", "error")

        def _diagnostics(self):
            self._check_command_types()
            s = self.stats.snapshot()
            ident = self.engine.describe() if self.engine else "no engine"
            fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            self.get_logger().info(
                f"{ident}: processed {s['processed']}, dropped {s['dropped']}, rejected {s['rejected']}, "
                f"skipped {s['skipped']}; latency p50 {fmt(s['latency_p50_ms'])} ms, p90 {fmt(s['latency_p90_ms'])} ms")
            arr = DiagnosticArray()
            arr.header.stamp = self.get_clock().now().to_msg()
            st = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{self.get_name()}: ptq4ris",
                                  message=ident, hardware_id=ident)
            # what the engine does on this machine: CPU int8 features, export target, runtime and why, self-check
            engine = {f"engine_{k}": v for k, v in self.engine.report().items()} if self.engine else {}
            st.values = [KeyValue(key=k, value=str(v)) for k, v in {**engine, **s}.items()]
            arr.status = [st]
            self.diag_pub.publish(arr)

    return _RISNode


class _Lazy:
    """Build the node class on first use (rclpy must be importable, i.e. after bootstrapping)."""

    def __call__(self, *a, **k):
        return _make_node_class()(*a, **k)


RISNode = _Lazy()

if __name__ == "__main__":
    main()
