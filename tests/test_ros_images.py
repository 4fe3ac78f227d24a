"""Image messages ↔ NumPy without ROS: the conversions the node and the bag tools share."""
import array
from types import SimpleNamespace

import numpy as np
import pytest

from ptq4ris_core.ros_images import ImageInputError, as_rgb, fill_image, jpeg_bytes, raw_pixels, to_pixels, to_rgb


def raw_to_rgb(*args):
    return as_rgb(*raw_pixels(*args))


RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
AS = {"rgb8": RGB, "bgr8": RGB[..., ::-1], "rgba8": np.dstack([RGB, np.full((5, 7), 9, np.uint8)]),
      "bgra8": np.dstack([RGB[..., ::-1], np.full((5, 7), 9, np.uint8)])}


@pytest.mark.parametrize("encoding", sorted(AS))
@pytest.mark.parametrize("container", [bytes, bytearray, lambda b: array.array("B", b), list,
                                       lambda b: np.frombuffer(b, np.uint8)])
def test_every_encoding_and_data_container_gives_the_same_rgb(encoding, container):
    pixels = np.ascontiguousarray(AS[encoding])
    out = raw_to_rgb(encoding, 5, 7, 7 * pixels.shape[2], container(pixels.tobytes()), 10**6)
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize("encoding", sorted(AS) + ["mono8"])
def test_raw_pixels_keep_the_frames_channel_order_and_as_rgb_converts(encoding):
    pixels = RGB[..., :1] if encoding == "mono8" else np.ascontiguousarray(AS[encoding])
    out, order = raw_pixels(encoding, 5, 7, 7 * pixels.shape[2], pixels.tobytes(), 10**6)
    assert out.shape == (5, 7, 3) and out.flags.c_contiguous and order == ("bgr" if encoding.startswith("bgr") else "rgb")
    want = np.repeat(RGB[..., :1], 3, axis=2) if encoding == "mono8" else RGB
    np.testing.assert_array_equal(as_rgb(out, order), want)
    if order == "bgr":
        np.testing.assert_array_equal(out, RGB[..., ::-1])  # not converted until asked


def test_compressed_frames_decode_to_rgb_as_opencv_decodes_them():
    """Reference: OpenCV's encoder and decoder (the full install has them; the runtime decodes with Pillow)."""
    import cv2
    ok, png = cv2.imencode(".png", np.ascontiguousarray(RGB[..., ::-1]))
    msg = SimpleNamespace(format="png", data=array.array("B", png.tobytes()))
    out, order = to_pixels(msg)
    assert order == "rgb"
    np.testing.assert_array_equal(out, RGB)
    np.testing.assert_array_equal(to_rgb(msg), RGB)
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    jpg = jpeg_bytes(frame)
    ref = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    got = to_rgb(SimpleNamespace(format="jpeg", data=jpg))
    assert got.shape == (48, 64, 3) and np.abs(got.astype(int) - ref).max() <= 2


@pytest.mark.parametrize("data,words", [(b"", "no data"), (b"\xff\xd8 not a jpeg", "cannot be decoded"),
                                        (None, "exceeds max_image_pixels")])
def test_bad_compressed_frames_are_named(data, words):
    if data is None:  # a large frame is refused from its header, before its pixels are decoded
        data = jpeg_bytes(np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(ImageInputError, match=words):
        to_rgb(SimpleNamespace(format="jpeg", data=data), max_pixels=10_000)


def test_row_padding_is_dropped():
    padded = np.zeros((5, 7 * 3 + 4), np.uint8)
    padded[:, :21] = RGB.reshape(5, 21)
    np.testing.assert_array_equal(raw_to_rgb("rgb8", 5, 7, 25, array.array("B", padded.tobytes()), 10**6), RGB)


@pytest.mark.parametrize("encoding,h,w,step,nbytes,words", [
    ("32FC1", 5, 7, 28, 140, "unsupported encoding"), ("rgb8", 0, 7, 21, 0, "empty image"),
    ("rgb8", 5, 7, 20, 105, "step 20 is smaller"), ("rgb8", 5, 7, 21, 104, "data has 104 bytes"),
    ("rgb8", 3000, 3000, 9000, 10, "exceeds max_image_pixels")])
def test_inconsistent_messages_are_named(encoding, h, w, step, nbytes, words):
    msg = SimpleNamespace(encoding=encoding, height=h, width=w, step=step, data=array.array("B", bytes(nbytes)))
    with pytest.raises(ImageInputError, match=words):
        to_rgb(msg, max_pixels=10**6)


def test_fill_image_gives_rclpys_own_data_type_and_round_trips():
    mask = (RGB[..., 0] > 128).astype(np.uint8) * 255
    header = object()
    msg = fill_image(SimpleNamespace(), header, mask, "mono8")
    assert msg.header is header and (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 7, "mono8")
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"  # no per-element check in rclpy
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7), mask)
    rgb = fill_image(SimpleNamespace(), header, RGB, "rgb8")
    np.testing.assert_array_equal(raw_to_rgb("rgb8", rgb.height, rgb.width, rgb.step, rgb.data, 10**6), RGB)
