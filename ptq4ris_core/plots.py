"""Pictures people look at: masks over images, with the sentence and the IoU."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .frames import overlay


def mask_grid(items: list[dict], path: str | Path, cols: int = 3) -> Path:
    """``items``: dicts with image, pred (uint8 0/255), optional gt (bool), text, optional iou."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, it in zip(axes.ravel(), items):
        shown = overlay(it["image"], it["pred"])
        if it.get("gt") is not None:  # ground-truth outline in white
            from scipy.ndimage import binary_erosion
            gt = np.asarray(it["gt"], bool)
            shown[gt & ~binary_erosion(gt, iterations=1)] = 255
        ax.imshow(shown)
        title = f'"{it["text"]}"'
        if it.get("iou") is not None:
            title += f"\nIoU {it['iou']:.2f}"
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
