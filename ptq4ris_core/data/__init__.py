"""Generated referring scenes (images, expressions, exact masks) and their datasets."""
from .expressions import KINDS
from .scenes import SPLITS, Sample, SceneGenerator

__all__ = ["KINDS", "SPLITS", "Sample", "SceneGenerator"]
