"""ROS image messages ↔ NumPy, with every inconsistency turned into a named ImageInputError.

Works on rclpy messages (the node) and on rosbags messages (bag evaluation) alike: both have the
same fields (PyPI's cv_bridge is broken on NumPy 2). We check size, step and data length first, strip row
padding, and leave BGR frames in BGR until asked (``as_rgb``): the engine swaps channels after shrinking.
"""
from __future__ import annotations

import array

import numpy as np

from .errors import InputError

SUPPORTED = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


class ImageInputError(InputError):
    """An image message the node cannot use; the message says why."""


def raw_pixels(encoding: str, height: int, width: int, step: int, data, max_pixels: int) -> tuple[np.ndarray, str]:
    """A raw image's pixels without colour conversion: (H, W, 3) uint8 and their channel order, "rgb" or
    "bgr" (mono8 is spread to three equal channels, alpha is dropped). A consumer that shrinks the frame
    first (the engine) swaps a BGR frame's channels on far fewer pixels than a full-frame conversion."""
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
    img = rows.reshape(height, width, ch)
    if ch == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[..., :3]), "bgr" if encoding.startswith("bgr") else "rgb"


def as_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    """(H, W, 3) uint8 in ``order`` → RGB."""
    if order == "rgb":
        return pixels
    return np.ascontiguousarray(pixels[..., ::-1])


def _as_bytes(data) -> np.ndarray:
    """A uint8 view of a message's data without copying (rclpy gives array.array, rosbags ndarray)."""
    try:
        return np.frombuffer(data, np.uint8)
    except TypeError:  # no buffer (a plain list of ints)
        return np.frombuffer(bytes(data), np.uint8)


def compressed_pixels(fmt: str, data, max_pixels: int) -> tuple[np.ndarray, str]:
    """A compressed image (JPEG, PNG, any format Pillow reads) decoded: (H, W, 3) uint8 RGB, and "rgb".
    The size is checked from the header, before the pixels are decoded."""
    import io

    from PIL import Image as PILImage
    buf = _as_bytes(data)
    if buf.size == 0:
        raise ImageInputError("compressed image has no data")
    try:
        with PILImage.open(io.BytesIO(buf.tobytes())) as im:
            if im.width * im.height > max_pixels:
                raise ImageInputError(f"image of {im.width}x{im.height} exceeds max_image_pixels={max_pixels}")
            img = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as e:
        raise ImageInputError(f"compressed image ({fmt or 'unknown format'}, {buf.size} bytes) cannot be "
                              f"decoded: {e}") from e
    return img, "rgb"


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    """An (H, W, 3) uint8 RGB frame as JPEG, as a camera driver's compressed topic carries it."""
    import io

    from PIL import Image as PILImage
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def to_pixels(msg, max_pixels: int = 40_000_000) -> tuple[np.ndarray, str]:
    """sensor_msgs/Image or CompressedImage → (H, W, 3) uint8 and its channel order ("rgb" or "bgr")."""
    if hasattr(msg, "format"):  # sensor_msgs/CompressedImage
        return compressed_pixels(msg.format, msg.data, max_pixels)
    return raw_pixels(msg.encoding, msg.height, msg.width, msg.step, msg.data, max_pixels)


def to_rgb(msg, max_pixels: int = 40_000_000) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage → (H, W, 3) uint8 RGB."""
    return as_rgb(*to_pixels(msg, max_pixels))


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
