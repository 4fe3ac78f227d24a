"""RIS models: the default LAVT-style network and how to build, save and load it."""
from .ris import Preprocessor, RISConfig, RISModel
from .store import DEFAULT_WEIGHTS, build_model, load_model, save_model

__all__ = ["Preprocessor", "RISConfig", "RISModel", "DEFAULT_WEIGHTS", "build_model", "load_model", "save_model"]
