"""Generated referring scenes (images, expressions, exact masks) and their datasets."""
from .expressions import KINDS
from .scenes import SPLIT_SIZES, SPLITS, Sample, SceneGenerator

__all__ = ["KINDS", "SPLIT_SIZES", "SPLITS", "Sample", "SceneGenerator"]
