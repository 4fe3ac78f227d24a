"""Quantization methods by name: rtn, ptq4vit, repqvit, ptq4ris, ptq4sam, mixq-kl, mixq-lrp."""
from . import mixq, ptq4ris, ptq4sam, ptq4vit, repqvit, rtn  # noqa: F401  (registration)
from .base import REGISTRY, Method, get_method

__all__ = ["REGISTRY", "Method", "get_method"]
