"""The deployable engine: two ONNX graphs (text encoder, segmenter) + meta.json, run by ONNX Runtime
or OpenVINO. ``Engine.load(path).segment(image, text) -> (mask, score)``."""
from .artifact import EngineError
from .engine import Engine
from .export import export_engine

__all__ = ["Engine", "EngineError", "export_engine"]
