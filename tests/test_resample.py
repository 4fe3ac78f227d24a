"""The runtime's NumPy resizes against OpenCV's (a second implementation, in the full install): the frame's area
shrink and bilinear enlargement within one grey level, and the mask's outline-only enlargement equal to
enlarging both maps whole and thresholding."""
import numpy as np
import pytest
from PIL import Image

from ptq4ris_core import resample
from ptq4ris_core.frames import mask_from_logits, resize_rgb

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize("height,width", [(480, 640), (1080, 1920), (333, 517), (200, 129), (40, 50), (100, 300)])
def test_frames_shrink_as_opencv_area_and_enlarge_as_its_bilinear(height, width):
    image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    shrinks = height >= 128 and width >= 128
    ref = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR)
    got = resize_rgb(image, 128)
    assert got.shape == (128, 128, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - ref).max() <= 1


def _maps():
    rng = np.random.default_rng(0)
    coarse = rng.normal(0, 3, (16, 16)).astype(np.float32)
    blobs = np.asarray(Image.fromarray(coarse, mode="F").resize((128, 128), Image.BILINEAR))
    frame_filling = np.full((128, 128), -2.0, np.float32)
    frame_filling[5:120, 3:125] = 2.0
    yy, xx = np.mgrid[:128, :128]
    one_object = (3 - np.hypot(yy - 60, xx - 70) / 10).astype(np.float32)
    speckle = rng.normal(0, 1, (128, 128)).astype(np.float32)  # an outline everywhere: the dense path
    return {"blobs": blobs, "frame_filling": frame_filling, "one_object": one_object, "speckle": speckle,
            "empty": np.full((128, 128), -5.0, np.float32), "full": np.full((128, 128), 5.0, np.float32)}


@pytest.mark.parametrize("name", sorted(_maps()))
@pytest.mark.parametrize("height,width", [(480, 640), (720, 1280), (131, 129), (128, 200), (333, 517)])
def test_the_enlarged_mask_and_score_equal_enlarging_both_maps_whole(name, height, width):
    margin = _maps()[name]
    logits = np.stack([np.zeros_like(margin), margin])[None]
    for threshold in (0.5, 0.8):
        cut = np.log(threshold / (1 - threshold))
        d = cv2.resize(margin, (width, height), interpolation=cv2.INTER_LINEAR)
        p = cv2.resize(1 / (1 + np.exp(-margin)), (width, height), interpolation=cv2.INTER_LINEAR)
        want = d > cut
        mask, score = mask_from_logits(logits, height, width, threshold)
        differ = (mask == 255) != want
        assert np.abs(d[differ] - cut).max(initial=0) < 1e-5  # only float rounding at the threshold itself
        assert score == pytest.approx(float(p[want].astype(np.float64).mean()) if want.any() else 0.0, abs=1e-5)


def test_both_paths_of_the_enlargement_agree():
    """The outline-only path and the whole-map path give the same mask and score on a blobby margin."""
    margin = _maps()["blobs"]
    prob = 1 / (1 + np.exp(-margin))
    results = []
    for share in (0.0, 1.0):
        old, resample.DENSE_SHARE = resample.DENSE_SHARE, share
        try:
            results.append(resample.enlarged_mask(margin, prob, 480, 640, np.float32(0.3)))
        finally:
            resample.DENSE_SHARE = old
    (m0, t0, n0), (m1, t1, n1) = results
    assert np.array_equal(m0, m1) and n0 == n1 and t0 == pytest.approx(t1, rel=1e-6)
