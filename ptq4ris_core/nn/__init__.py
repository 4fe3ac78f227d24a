"""Quantized wrappers: a float layer plus quantizer slots for its inputs and weights."""
from .wrappers import QUANT_WRAPPERS, QuantConv2d, QuantLinear, QuantMatMul, QuantModule

__all__ = ["QUANT_WRAPPERS", "QuantConv2d", "QuantLinear", "QuantMatMul", "QuantModule"]
