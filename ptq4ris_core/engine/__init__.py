"""The deployable engine: two ONNX graphs (text encoder, segmenter) + meta.json, run by ONNX Runtime
or OpenVINO. ``Engine.load(path).segment(image, text) -> (mask, score)``.

The runtime half (``Engine``, ``cpu``, ``golden``, ``choice``) imports no torch; ``export_engine`` does,
so it is imported only when asked for."""
from .artifact import EngineError
from .engine import Engine

__all__ = ["Engine", "EngineError", "export_engine"]


def __getattr__(name):
    if name == "export_engine":
        from .export import export_engine
        return export_engine
    raise AttributeError(name)
