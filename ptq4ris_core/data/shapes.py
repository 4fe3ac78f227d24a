"""Shape kinds, colours and the geometry of one drawn object.

Each shape is a polygon in unit coordinates (radius about 1), rotated, scaled and
translated into the image. A ring is an outer polygon with an inner hole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon")

# Colour names and their base RGB; each drawn object jitters around these.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 30),
    "orange": (245, 130, 20),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}

SIZES = ("small", "large")
# Object radius as a share of the image side, per size class. The gap between the
# classes keeps "small"/"large" and "largest"/"smallest" unambiguous.
SIZE_RADIUS = {"small": (0.075, 0.10), "large": (0.15, 0.19)}


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    a = np.arange(n) * 2 * math.pi / n + phase
    return np.stack([np.cos(a), np.sin(a)], 1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    a = np.arange(2 * points) * math.pi / points - math.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _cross(arm: float = 0.36) -> np.ndarray:
    a, b = arm, 1.0
    return np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a),
                     (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)], float)


# Outer outline of each kind, and the hole for the ring (scaled outer).
OUTLINES = {
    "circle": _regular(48),
    "square": _regular(4, math.pi / 4) * math.sqrt(2) * 0.85,
    "triangle": _regular(3, -math.pi / 2) * 1.1,
    "star": _star() * 1.15,
    "ring": _regular(48),
    "cross": _cross(),
    "hexagon": _regular(6),
}
RING_HOLE = 0.55


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    cx: float  # centre, pixels
    cy: float
    radius: float  # pixels
    angle: float  # radians
    rgb: tuple

    def polygons(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Outer polygon and optional hole, as (N, 2) pixel coordinates."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        rot = np.array([[c, -s], [s, c]])
        centre = np.array([self.cx, self.cy])
        outer = OUTLINES[self.shape] @ rot.T * self.radius + centre
        hole = None
        if self.shape == "ring":
            hole = OUTLINES["ring"] @ rot.T * self.radius * RING_HOLE + centre
        return outer, hole

    def rasterize(self, width: int, height: int) -> np.ndarray:
        """Exact boolean mask of this object alone (no occlusion)."""
        img = Image.new("1", (width, height), 0)
        draw = ImageDraw.Draw(img)
        outer, hole = self.polygons()
        draw.polygon([tuple(p) for p in outer], fill=1)
        if hole is not None:
            draw.polygon([tuple(p) for p in hole], fill=0)
        return np.asarray(img, dtype=bool)
