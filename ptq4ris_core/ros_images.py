"""ROS image messages ↔ NumPy, with every inconsistency turned into a named ImageInputError.

Works on rclpy messages (the node) and on rosbags messages (bag evaluation) alike: both have the
same fields. Colour conversion comes from rosbags-image (NumPy-2 safe; PyPI's cv_bridge is not).
We check size, step and data length first, and strip row padding, which rosbags-image does not do.
"""
from __future__ import annotations

import array

import numpy as np

from .errors import InputError

SUPPORTED = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


class ImageInputError(InputError):
    """An image message the node cannot use; the message says why."""


def raw_to_rgb(encoding: str, height: int, width: int, step: int, data, max_pixels: int) -> np.ndarray:
    from rosbags.image.image import convert_color
    if encoding not in SUPPORTED:
        raise ImageInputError(f"unsupported encoding {encoding!r}; publish one of {', '.join(SUPPORTED)}")
    if height <= 0 or width <= 0:
        raise ImageInputError(f"empty image ({width}x{height})")
    if height * width > max_pixels:
        raise ImageInputError(f"image of {width}x{height} exceeds max_image_pixels={max_pixels}; downscale it upstream")
    ch = SUPPORTED[encoding]
    if step < width * ch:
        raise ImageInputError(f"step {step} is smaller than width*channels = {width * ch} for {encoding}")
    buf = _as_bytes(data)
    if buf.size < step * height:
        raise ImageInputError(f"data has {buf.size} bytes, {step * height} expected (step {step} x height {height})")
    rows = buf[: step * height].reshape(height, step)[:, : width * ch]  # drop row padding
    img = rows.reshape(height, width, ch) if ch > 1 else rows.reshape(height, width)
    return np.ascontiguousarray(convert_color(img, encoding, "rgb8"))


def _as_bytes(data) -> np.ndarray:
    """A uint8 view of a message's data without copying (rclpy gives array.array, rosbags ndarray)."""
    try:
        return np.frombuffer(data, np.uint8)
    except TypeError:  # no buffer (a plain list of ints)
        return np.frombuffer(bytes(data), np.uint8)


def compressed_to_rgb(fmt: str, data, max_pixels: int) -> np.ndarray:
    import cv2
    buf = _as_bytes(data)
    if buf.size == 0:
        raise ImageInputError("compressed image has no data")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageInputError(f"compressed image ({fmt or 'unknown format'}, {buf.size} bytes) cannot be decoded")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageInputError(f"image of {img.shape[1]}x{img.shape[0]} exceeds max_image_pixels={max_pixels}")
    return np.ascontiguousarray(img[..., ::-1])  # OpenCV decodes to BGR


def to_rgb(msg, max_pixels: int = 40_000_000) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage → (H, W, 3) uint8 RGB."""
    if hasattr(msg, "format"):  # sensor_msgs/CompressedImage
        return compressed_to_rgb(msg.format, msg.data, max_pixels)
    return raw_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data, max_pixels)


def fill_image(msg, header, pixels: np.ndarray, encoding: str):
    """Fill a sensor_msgs/Image from a (H, W) mono8 or (H, W, 3) rgb8 array, with the given header."""
    msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1))
    # array.array is rclpy's own type for uint8[]: taken as is, even with ROS_PYTHON_CHECK_FIELDS=1
    # (bytes would then be checked element by element in Python).
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels, dtype=np.uint8).data)  # one copy, straight from the buffer
    msg.data = data
    return msg
