"""Rosbag evaluation: make a bag, read it back exactly, score it offline, replay it live, and refuse bad bags."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from ptq4ris_core.bags import BagError, make_bag, open_bag
from ptq4ris_core.bags.evaluate import evaluate_bag
from ptq4ris_core.bags.make import JITTER, camera_frames
from ptq4ris_core.bags.topics import COMMAND_TOPIC, GT_TOPIC, IMAGE, IMAGE_TOPIC, STRING, typestore
from ptq4ris_core.data import SceneGenerator
from ptq4ris_core.engine import Engine
from ptq4ris_core.metrics import RISScores

W, H = 160, 120


@pytest.fixture(scope="module")
def engine(default_engine):
    return Engine.load(default_engine, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return make_bag(tmp_path_factory.mktemp("bags") / "mcap", n=10, width=W, height=H, hold=3, progress=False)


def _scenes(n_scenes):
    gen = SceneGenerator(W + 2 * JITTER, H + 2 * JITTER)
    return [gen.sample("test", i) for i in range(n_scenes)]


def test_bag_holds_the_scenes_commands_and_exact_masks(bag):
    scenes = _scenes(4)
    rng = np.random.default_rng([0, 7])
    expected = [(s.text, img, m) for s in scenes for img, m in camera_frames(s, W, H, 3, rng)][:10]
    with open_bag(bag) as frames:
        assert (frames.image_topic, frames.command_topic, frames.gt_topic) == (IMAGE_TOPIC, COMMAND_TOPIC, GT_TOPIC)
        got = list(frames)
        assert len(frames.commands()) == 4  # a new command every 3 frames
    assert len(got) == 10
    for f, (text, img, m) in zip(got, expected):
        assert f.command == text  # the latest command before the frame's stamp
        assert np.array_equal(f.image, img)  # bgr8 in the bag, RGB back out, bit-exact
        assert np.array_equal(f.gt, m) and f.gt.any()
    stamps = [f.stamp_ns for f in got]
    assert np.allclose(np.diff(stamps), 1e8)  # 10 Hz


def test_offline_eval_scores_what_the_engine_does(bag, engine, tmp_path):
    s = evaluate_bag(bag, engine, out=tmp_path / "report", progress=False)
    ref = RISScores()
    with open_bag(bag) as frames:
        for f in frames:
            ref.add(engine.segment(f.image, f.command)[0] > 0, f.gt)
    assert s["frames_scored"] == 10 and s["skipped"] == {}
    assert s["accuracy"]["mIoU"] == pytest.approx(ref.summary()["mIoU"])
    assert s["accuracy"]["mIoU"] > 0.5  # the default model does find the objects
    assert s["latency_ms"]["segment"]["n"] == 10
    assert s["text_encodes"] <= 4 + 1  # one encode per distinct command
    report = tmp_path / "report"
    for name in ("report.json", "report.md", "iou_hist.png", "latency.png", "worst_frames.png"):
        assert (report / name).stat().st_size > 0
    assert len(json.loads((report / "report.json").read_text(encoding="utf-8"))["frames"]) == 10


@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "rgba8", "bgra8"])
def test_every_encoding_the_node_takes(encoding, tmp_path, engine):
    b = make_bag(tmp_path / encoding, n=3, width=W, height=H, encoding=encoding, storage="sqlite3", progress=False)
    with open_bag(b) as frames:
        got = list(frames)
    ref = list(open_bag(make_bag(tmp_path / "ref", n=3, width=W, height=H, progress=False)))
    for f, r in zip(got, ref):
        want = np.repeat(np.round(r.image.mean(2))[..., None], 3, 2) if encoding == "mono8" else r.image
        assert np.abs(f.image.astype(int) - want).max() <= 1
    assert evaluate_bag(b, engine, progress=False)["frames_scored"] == 3


def test_sqlite3_with_compressed_images(tmp_path, engine):
    b = make_bag(tmp_path / "jpeg", n=4, width=W, height=H, storage="sqlite3", compressed=True, progress=False)
    assert list(b.glob("*.db3"))
    with open_bag(b) as frames:
        assert frames.image_topic == IMAGE_TOPIC + "/compressed"
        got = list(frames)
    ref = list(open_bag(make_bag(tmp_path / "raw", n=4, width=W, height=H, progress=False)))
    for f, r in zip(got, ref):
        assert np.abs(f.image.astype(float) - r.image).mean() < 6  # JPEG at quality 90 (it also smooths the sensor noise)
    s = evaluate_bag(b, engine, progress=False)
    assert s["frames_scored"] == 4 and s["accuracy"]["mIoU"] > 0.4


def _write(path, messages, storage="mcap"):
    """A bag from (topic, msgtype, log_ns, message) tuples."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    ts = typestore()
    conns = {}
    with Writer(path, version=9, storage_plugin=getattr(StoragePlugin, storage.upper())) as w:
        for topic, msgtype, t, msg in messages:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
            w.write(conns[topic], t, ts.serialize_cdr(msg, msgtype))
    return path


def _image_msg(t_ns, rgb, encoding="rgb8"):
    T = typestore().types
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9),
                                      frame_id="cam")
    ch = 1 if rgb.ndim == 2 else rgb.shape[2]
    return T[IMAGE](header=header, height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=0,
                    step=rgb.shape[1] * ch, data=np.ascontiguousarray(rgb).reshape(-1))


def test_bad_bags_are_named_errors(tmp_path, bag):
    with pytest.raises(BagError, match="not found"):
        open_bag(tmp_path / "nope")
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "metadata.yaml").write_bytes((bag / "metadata.yaml").read_bytes())
    mcap = next(bag.glob("*.mcap"))
    (cut / mcap.name).write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(BagError, match="cannot read"):
        open_bag(cut)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="metadata.yaml"):
        open_bag(tmp_path / "empty")
    T = typestore().types
    only_text = _write(tmp_path / "text_only", [(COMMAND_TOPIC, STRING, 1, T[STRING](data="the red circle"))])
    with pytest.raises(BagError, match="no camera image topic"):
        open_bag(only_text)
    point = "geometry_msgs/msg/Point"
    odd = _write(tmp_path / "odd", [("/points", point, 1, T[point](x=1.0, y=2.0, z=3.0)),
                                    ("/cam", IMAGE, 2, _image_msg(2, np.zeros((8, 8, 3), np.uint8)))])
    with pytest.raises(BagError, match="holds geometry_msgs/msg/Point"):
        open_bag(odd, image_topic="/points")
    with pytest.raises(BagError, match="no command topic"):
        open_bag(odd)
    with pytest.raises(BagError, match="no topic '/nothing'"):
        open_bag(bag, image_topic="/nothing")


def test_bad_frames_are_counted_skips(tmp_path, engine):
    """A mask of another size, stamps going backwards, an unusable image, frames before any command."""
    T = typestore().types
    s = _scenes(1)[0]
    img, gt = s.image[:H, :W], s.mask[:H, :W]
    gt_msg = lambda t, m: _image_msg(t, (m * 255).astype(np.uint8), "mono8")  # noqa: E731
    sec = 10**9
    bad_enc = _image_msg(6 * sec, img)
    bad_enc.encoding = "yuv422"
    msgs = [(IMAGE_TOPIC, IMAGE, 1 * sec, _image_msg(1 * sec, img)),  # before the first command
            (COMMAND_TOPIC, STRING, 2 * sec - 1, T[STRING](data=s.text)),
            (IMAGE_TOPIC, IMAGE, 2 * sec, _image_msg(2 * sec, img)), (GT_TOPIC, IMAGE, 2 * sec, gt_msg(2 * sec, gt)),
            (IMAGE_TOPIC, IMAGE, 3 * sec, _image_msg(3 * sec, img)),
            (GT_TOPIC, IMAGE, 3 * sec, gt_msg(3 * sec, gt[:50])),  # ground truth of another size
            (IMAGE_TOPIC, IMAGE, 4 * sec, _image_msg(int(2.5 * sec), img)),  # stamp went backwards
            (IMAGE_TOPIC, IMAGE, 5 * sec, _image_msg(5 * sec, img)),  # no ground truth
            (IMAGE_TOPIC, IMAGE, 6 * sec, bad_enc)]
    b = _write(tmp_path / "bad_frames", msgs, storage="sqlite3")
    r = evaluate_bag(b, engine, progress=False)
    sk = r["skipped"]
    assert sk["before the first command"] == 1 and sk["stamp went backwards"] == 1
    assert sum(v for k, v in sk.items() if k.startswith("image unusable") and "yuv422" in k) == 1
    assert sk["ground truth of another size than its image (scored for latency only)"] == 1
    assert r["frames"] == 3 and r["frames_scored"] == 1 and r["frames_without_ground_truth"] == 1


def test_bag_without_commands_or_ground_truth(tmp_path, engine):
    s = _scenes(1)[0]
    b = _write(tmp_path / "plain", [("/front/image", IMAGE, t, _image_msg(t, s.image[:H, :W])) for t in (1, 2, 3)])
    with pytest.raises(BagError, match="--command"):
        evaluate_bag(b, engine, progress=False)
    r = evaluate_bag(b, engine, command=s.text, progress=False)
    assert r["accuracy"] is None and r["frames"] == 3 and r["latency_ms"]["segment"]["n"] == 3
    assert r["image_topic"] == "/front/image"


NODE = Path(sys.executable).parent / "ptq4ris_node"


@pytest.mark.skipif(not NODE.exists(), reason="ptq4ris_node is not installed (make installs it)")
def test_live_replay_matches_offline(bag, engine, default_engine, tmp_path, monkeypatch):
    from ptq4ris_core.bags.replay import replay_bag
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    offline = evaluate_bag(bag, engine, progress=False)
    live = replay_bag(bag, default_engine, tmp_path / "replay", rate=0.5, domain_id=50 + os.getpid() % 9,
                      node_params={"threads": 1})
    assert live["frames_sent"] == 10 and live["dropped"] == 0 and live["wrong_header"] == 0
    assert live["accuracy"]["mIoU"] == pytest.approx(offline["accuracy"]["mIoU"], abs=0.005)
    assert live["latency_ms"]["end_to_end"]["n"] == 10
    assert (tmp_path / "replay" / "report.md").exists()


@pytest.mark.skipif(not NODE.exists(), reason="ptq4ris_node is not installed (make installs it)")
def test_live_replay_of_compressed_sqlite_bag_into_a_running_node(tmp_path, engine, default_engine, monkeypatch):
    """--no-launch: the node is started here, on the CompressedImage transport, and the replay only plays."""
    import signal
    import subprocess
    from ptq4ris_core.bags.replay import replay_bag, ros_environment
    b = make_bag(tmp_path / "jpeg", n=6, width=W, height=H, storage="sqlite3", compressed=True, progress=False)
    domain = 40 + os.getpid() % 9
    env = {**ros_environment(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "OMP_NUM_THREADS": "1"}
    node = subprocess.Popen([str(NODE), "--ros-args", "-p", f"engine_path:={default_engine}", "-p", "threads:=1",
                             "-p", "image_transport:=compressed", "-r", "image/compressed:=/camera/image_raw/compressed",
                             "-r", "command:=/command", "-r", "mask:=/mask", "-r", "result:=/result"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        live = replay_bag(b, None, tmp_path / "replay", rate=0.5, launch=False, domain_id=domain)
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(15)
    offline = evaluate_bag(b, engine, progress=False)
    assert live["frames_sent"] == 6 and live["dropped"] == 0 and live["wrong_header"] == 0
    assert live["accuracy"]["mIoU"] == pytest.approx(offline["accuracy"]["mIoU"], abs=0.005)
