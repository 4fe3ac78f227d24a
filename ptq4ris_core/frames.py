"""Camera frames and commands in, masks out: the checks and conversions every entry point shares.

Torch-free on purpose (NumPy and PIL): the quantized engine, the ROS node and bag scoring run
with these alone, and so does the training generator's camera simulation.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import resample
from .errors import InputError

log = logging.getLogger(__name__)
MAX_COMMAND_CHARS = 2000


def check_command(text) -> str:
    """A usable command, or an InputError saying why not."""
    if not isinstance(text, str):
        raise InputError(f"the command must be text, got {type(text).__name__}")
    text = " ".join(text.split())
    if not text:
        raise InputError("the command is empty or blank; give a referring expression such as 'the red circle on the left'")
    if len(text) > MAX_COMMAND_CHARS:
        log.warning("command of %d characters cut to %d", len(text), MAX_COMMAND_CHARS)
        text = text[:MAX_COMMAND_CHARS]
    return text


def check_image(image) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array; greyscale and RGBA arrays are converted, anything else refused."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"the image must be a NumPy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"the image must be uint8 RGB, got dtype {image.dtype}; convert with (img*255).astype(np.uint8) if it is float in [0, 1]")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"the image must be HxWx3 (RGB), HxW (grey) or HxWx4 (RGBA), got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        image = image[..., :3]
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"the image is empty (shape {image.shape})")
    return np.ascontiguousarray(image)


def read_image(path: str | Path) -> np.ndarray:
    """Read any image file PIL knows as RGB uint8, with a clear error for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                log.warning("converting %s image %s to RGB", im.mode, path)
            return np.asarray(im.convert("RGB"))
    except Image.DecompressionBombError as e:
        raise InputError(f"{path} is too large to decode safely ({e}); downscale it first") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot read {path} as an image ({e}); is it a complete PNG or JPEG?") from e


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 → (size, size, 3). Shrinking averages the source pixels under each output pixel
    (the area filter: antialiased, OpenCV's ``INTER_AREA`` within one grey level); enlarging is bilinear."""
    return resample.resize_image(image, size, size)


def mask_from_logits(logits: np.ndarray, height: int, width: int, threshold: float = 0.5) -> tuple[np.ndarray, float]:
    """(1, 2, S, S) logits → mask (H, W) uint8 0/255 at the image's size, and a confidence score.

    The foreground-logit margin d (sigmoid(d) = softmax foreground probability) is resized bilinearly
    (half-pixel centres, as torch's align_corners=False); a pixel is in the mask when its probability
    exceeds ``threshold``. The score is the mean foreground probability over the mask (0 when it is
    empty); on images larger than the model's input the probability map is resized, not recomputed.
    Shared by the PyTorch path and every engine backend.
    """
    d_model = np.ascontiguousarray(logits[0, 1] - logits[0, 0], dtype=np.float32)
    cut = np.float32(np.log(threshold / (1 - threshold)))
    if height >= d_model.shape[0] and width >= d_model.shape[1] and (height, width) != d_model.shape:
        # enlarging (every camera frame): only the outline is interpolated (resample.enlarged_mask)
        mask, total, n = resample.enlarged_mask(d_model, 1 / (1 + np.exp(-d_model)), height, width, cut)
        return mask.view(np.uint8) * np.uint8(255), (total / n if n else 0.0)
    d = _shrink_float(d_model, height, width)
    prob = 1 / (1 + np.exp(-d))
    mask = (d > cut).view(np.uint8)
    n = np.count_nonzero(mask)
    score = float(np.dot(prob.ravel(), mask.ravel().astype(np.float32)) / n) if n else 0.0
    return mask * np.uint8(255), score


def _shrink_float(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float32 map to a size not larger on some side: PIL's bilinear, whose filter widens to antialias."""
    if x.shape == (height, width):
        return x
    return np.asarray(Image.fromarray(x, mode="F").resize((width, height), Image.BILINEAR))


class TextCache:
    """Encodes a command once: the command changes rarely, the image every frame.

    ``encode(text) -> features`` runs only for a new (normalised) command; ``encodes`` counts its runs.
    ``count_tokens(text)``: the command's length in tokens, to warn when it is cut. ``warn``: where that
    warning goes (the ROS node points it at its own logger).
    """

    def __init__(self, count_tokens, max_tokens: int, encode, warn=None):
        self.count_tokens, self.max_tokens, self.encode = count_tokens, max_tokens, encode
        self.warn = warn or log.warning
        self.text, self.value, self.encodes = None, None, 0

    def __call__(self, text: str):
        text = check_command(text)
        if text != self.text:
            if self.count_tokens(text) > self.max_tokens:
                self.warn(f"command is longer than {self.max_tokens} tokens; the rest is ignored")
            self.value, self.text = self.encode(text), text
            self.encodes += 1
        return self.value


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the mask's nonzero pixels; zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def overlay(image: np.ndarray, mask: np.ndarray, colour=(0, 255, 80), alpha: float = 0.5) -> np.ndarray:
    """The mask drawn over the image in a translucent colour."""
    out = image.astype(np.float32).copy()
    m = mask > 0
    out[m] = (1 - alpha) * out[m] + alpha * np.array(colour, np.float32)
    return out.astype(np.uint8)
