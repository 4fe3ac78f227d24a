"""Open a rosbag2 (MCAP or SQLite), find its image, command and ground-truth topics, and walk its frames.

Each frame is paired with the latest command logged at or before the frame's header stamp, and with
the ground-truth mask that carries the same header stamp. Anything that makes a frame unusable is a
counted skip with its reason (``BagFrames.skipped``), never a silent wrong score; a bag that cannot be
used at all raises ``BagError``.
"""
from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ros_images import ImageInputError, to_rgb
from .errors import BagError
from .topics import COMMAND_TOPIC, GT_TOPIC, IMAGE, IMAGE_TOPIC, IMAGE_TYPES, STRING, typestore


@dataclass
class Frame:
    index: int  # position among the bag's image messages
    stamp_ns: int  # header stamp
    frame_id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    command: str
    gt: np.ndarray | None  # (H, W) bool, or None where the bag has none for this frame


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def _pick(topics: dict, given: str | None, types: tuple, what: str, flag: str, preferred: str | None,
          exclude: tuple = ()) -> str | None:
    listing = ", ".join(f"{t} ({i.msgtype})" for t, i in sorted(topics.items())) or "none"
    if given:
        if given not in topics:
            raise BagError(f"the bag has no topic {given!r} for the {what}; its topics: {listing}")
        if topics[given].msgtype not in types:
            raise BagError(f"topic {given} holds {topics[given].msgtype}, not {' or '.join(types)} as the {what} needs")
        return given
    found = [t for t, i in sorted(topics.items()) if i.msgtype in types and t not in exclude]
    if preferred in found:
        return preferred
    if len(found) == 1:
        return found[0]
    if found:
        raise BagError(f"several topics could be the {what}: {', '.join(found)}; choose one with {flag}")
    return None


class BagFrames:
    """An opened bag. Iterate it for ``Frame``s; ``skipped`` counts the frames left out and why."""

    def __init__(self, path, image_topic=None, command_topic=None, gt_topic=None, command: str | None = None,
                 max_pixels: int = 40_000_000):
        from rosbags.highlevel import AnyReader
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        if self.path.is_dir() and not (self.path / "metadata.yaml").exists():
            raise BagError(f"{self.path} has no metadata.yaml: a rosbag2 folder holds metadata.yaml beside its .mcap "
                           "or .db3 files ('ros2 bag reindex' rebuilds a lost one)")
        try:
            self.reader = AnyReader([self.path], default_typestore=typestore())
            self.reader.open()
        except Exception as e:  # noqa: BLE001 - rosbags raises several types; all mean "not a usable bag"
            raise BagError(f"cannot read {self.path} as a rosbag2 bag ({type(e).__name__}: {e}); "
                           "is it complete (a recording that was cut off lacks its index)?") from e
        topics = self.reader.topics
        # Ground truth only from a topic we are told about, or the one our bags use: never guessed.
        self.gt_topic = (_pick(topics, gt_topic, (IMAGE,), "ground-truth masks", "--gt-topic", None) if gt_topic
                         else (GT_TOPIC if topics.get(GT_TOPIC) and topics[GT_TOPIC].msgtype == IMAGE else None))
        self.image_topic = _pick(topics, image_topic, IMAGE_TYPES, "camera images", "--image-topic", IMAGE_TOPIC,
                                 exclude=(self.gt_topic,))
        if self.image_topic is None:
            raise BagError(f"the bag has no camera image topic (sensor_msgs/Image or CompressedImage); its topics: "
                           + (", ".join(f"{t} ({i.msgtype})" for t, i in sorted(topics.items())) or "none"))
        self.image_type = topics[self.image_topic].msgtype
        self.command_override = command
        self.command_topic = None if command else _pick(topics, command_topic, (STRING,), "commands",
                                                        "--command-topic", COMMAND_TOPIC)
        if not command and self.command_topic is None:
            raise BagError(f"the bag has no command topic (std_msgs/String); give one with --command \"...\"")
        self.n_images = topics[self.image_topic].msgcount
        self.max_pixels = max_pixels
        self.skipped: Counter = Counter()
        self.gt_missing = 0
        self._commands = self._read_commands()
        self._gt = self._read_gt()

    def close(self):
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _messages(self, topic):
        conns = [c for c in self.reader.connections if c.topic == topic]
        try:
            for conn, log_ns, raw in self.reader.messages(connections=conns):
                yield conn, log_ns, raw
        except Exception as e:  # noqa: BLE001
            raise BagError(f"{self.path} is damaged: reading {topic} failed ({type(e).__name__}: {e})") from e

    def _read_commands(self) -> tuple[list, list]:
        if self.command_override:
            return [-1], [self.command_override]
        pairs = []
        for conn, log_ns, raw in self._messages(self.command_topic):
            text = " ".join(self.reader.deserialize(raw, conn.msgtype).data.split())
            if text:
                pairs.append((log_ns, text))
            else:
                self.skipped["empty command"] += 1
        pairs.sort(key=lambda p: p[0])
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _read_gt(self) -> dict:
        """Stamp → packed mask (1 bit per pixel, so a long bag's ground truth stays small)."""
        out = {}
        if not self.gt_topic:
            return out
        for conn, _, raw in self._messages(self.gt_topic):
            msg = self.reader.deserialize(raw, conn.msgtype)
            try:
                m = to_rgb(msg, self.max_pixels)[..., 0] > 127  # mono8 0/255 (any image encoding works)
            except ImageInputError as e:
                self.skipped[f"ground truth unreadable ({e})"] += 1
                continue
            out[_stamp_ns(msg.header)] = (m.shape, np.packbits(m))
        return out

    def command_at(self, stamp_ns: int) -> str | None:
        times, texts = self._commands
        if self.command_override:
            return self.command_override
        i = bisect.bisect_right(times, stamp_ns) - 1
        return texts[i] if i >= 0 else None

    def commands(self) -> list[tuple[int, str]]:
        """(log time ns, text) of every command in the bag, in time order (empty with a --command override)."""
        return [] if self.command_override else list(zip(*self._commands))

    def gt_at(self, stamp_ns: int) -> tuple | None:
        return self._gt.get(stamp_ns)

    def raw_images(self):
        """(index, log_ns, header stamp, frame_id, raw CDR bytes) of every image message, for replay."""
        for index, (conn, log_ns, raw) in enumerate(self._messages(self.image_topic)):
            header = self.reader.deserialize(raw, conn.msgtype).header
            yield index, log_ns, _stamp_ns(header), header.frame_id, raw

    def __iter__(self):
        last = None
        for index, (conn, log_ns, raw) in enumerate(self._messages(self.image_topic)):
            msg = self.reader.deserialize(raw, conn.msgtype)
            stamp = _stamp_ns(msg.header)
            if last is not None and stamp < last:
                self.skipped["stamp went backwards"] += 1
                continue
            last = stamp
            command = self.command_at(stamp)
            if command is None:
                self.skipped["before the first command"] += 1
                continue
            try:
                image = to_rgb(msg, self.max_pixels)
            except ImageInputError as e:
                self.skipped[f"image unusable: {e}"] += 1
                continue
            gt = None
            packed = self.gt_at(stamp)
            if packed is not None:
                shape, bits = packed
                if shape != image.shape[:2]:
                    self.skipped["ground truth of another size than its image (scored for latency only)"] += 1
                else:
                    gt = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
            elif self.gt_topic:
                self.gt_missing += 1
            yield Frame(index, stamp, msg.header.frame_id, image, command, gt)


def open_bag(path, **kw) -> BagFrames:
    return BagFrames(path, **kw)
