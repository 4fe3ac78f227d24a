"""``ptq4ris bag make``: a rosbag2 of generated test scenes, as a robot's camera would record them.

A scene is held for a few frames, each seen through a slightly moved camera with sensor noise, so
a command stays in force for a few frames and then changes, as a user would talk to a robot. Per
frame: the image (raw bgr8, or JPEG), and the ground-truth mask (mono8 0/255) with the image's header.
Each command is logged 10 ms before the first frame it applies to.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data import SceneGenerator
from ..data.scenes import SPLIT_SIZES
from ..ros_images import jpeg_bytes
from .errors import BagError
from .topics import COMMAND_TOPIC, COMPRESSED, GT_TOPIC, IMAGE, IMAGE_TOPIC, STRING, compressed_topic, typestore

JITTER = 4  # camera shake, pixels each way
NOISE_SIGMA = 2.0  # sensor noise, grey levels
ENCODINGS = ("bgr8", "rgb8", "mono8", "rgba8", "bgra8")


def _encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    return {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb.mean(2).round().astype(np.uint8),
            "rgba8": np.concatenate([rgb, alpha], 2), "bgra8": np.concatenate([rgb[..., ::-1], alpha], 2)}[encoding]


def camera_frames(scene, width: int, height: int, hold: int, rng: np.random.Generator):
    """``hold`` views of one scene rendered with a JITTER margin: (rgb, mask) crops at random offsets."""
    for _ in range(hold):
        for _try in range(5):  # keep the referent in view
            dx, dy = (int(v) for v in rng.integers(0, 2 * JITTER + 1, 2))
            mask = scene.mask[dy:dy + height, dx:dx + width]
            if mask.any():
                break
        img = scene.image[dy:dy + height, dx:dx + width].astype(np.float32)
        img += rng.normal(0, NOISE_SIGMA, img.shape)
        yield np.clip(img, 0, 255).round().astype(np.uint8), mask


def make_bag(out, split: str = "test", n: int = 300, width: int = 640, height: int = 480, rate: float = 10.0,
             hold: int = 3, storage: str = "mcap", compressed: bool = False, encoding: str = "bgr8",
             start: int = 0, seed: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """Write ``n`` frames (``n / hold`` scenes from ``split`` starting at scene ``start``) at ``rate`` Hz."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    out = Path(out)
    if split not in SPLIT_SIZES:
        raise BagError(f"unknown split {split!r}; choose train, val, test or heldout")
    if n < 1 or hold < 1 or rate <= 0 or width < 16 or height < 16:
        raise BagError(f"need n >= 1, hold >= 1, rate > 0 and a size of at least 16x16 (got n={n}, hold={hold}, "
                       f"rate={rate}, {width}x{height})")
    if start + (n + hold - 1) // hold > SPLIT_SIZES[split]:
        raise BagError(f"the {split} split holds {SPLIT_SIZES[split]} scenes; {n} frames from scene {start} need more")
    if encoding not in ENCODINGS:
        raise BagError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise BagError(f"unknown storage {storage!r}; choose mcap or sqlite3")
    if out.exists():
        if not overwrite:
            raise BagError(f"{out} exists; remove it or pass --overwrite")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    ts = typestore()
    T = ts.types
    gen = SceneGenerator(width + 2 * JITTER, height + 2 * JITTER, seed=seed)
    rng = np.random.default_rng([seed, 7])
    period_ns = int(round(1e9 / rate))
    t0 = 1_700_000_000 * 10**9  # a fixed, plausible wall-clock start, so bags are reproducible
    image_topic, image_type = (compressed_topic(IMAGE_TOPIC), COMPRESSED) if compressed else (IMAGE_TOPIC, IMAGE)
    with Writer(out, version=9, storage_plugin=plugins[storage]) as w:
        c_img = w.add_connection(image_topic, image_type, typestore=ts)
        c_cmd = w.add_connection(COMMAND_TOPIC, STRING, typestore=ts)
        c_gt = w.add_connection(GT_TOPIC, IMAGE, typestore=ts)
        bar = tqdm(total=n, desc="bag make", unit="frame", disable=not progress, dynamic_ncols=True)
        frame = 0
        scene_index = start
        while frame < n:
            scene = gen.sample(split, scene_index)
            t_first = t0 + frame * period_ns
            w.write(c_cmd, t_first - 10_000_000, ts.serialize_cdr(T[STRING](data=scene.text), STRING))
            for rgb, mask in camera_frames(scene, width, height, min(hold, n - frame), rng):
                t = t0 + frame * period_ns
                header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t // 10**9,
                                                  nanosec=t % 10**9), frame_id="camera_optical_frame")
                if compressed:
                    msg = T[COMPRESSED](header=header, format="jpeg", data=np.frombuffer(jpeg_bytes(rgb), np.uint8))
                else:
                    arr = _encode(rgb, encoding)
                    msg = T[IMAGE](header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                                   step=width * (arr.shape[2] if arr.ndim == 3 else 1), data=arr.reshape(-1))
                w.write(c_img, t, ts.serialize_cdr(msg, image_type))
                gt = T[IMAGE](header=header, height=height, width=width, encoding="mono8", is_bigendian=0,
                              step=width, data=(mask.astype(np.uint8) * 255).reshape(-1))
                w.write(c_gt, t + 1, ts.serialize_cdr(gt, IMAGE))
                frame += 1
                bar.update()
            scene_index += 1
        bar.close()
    return out
