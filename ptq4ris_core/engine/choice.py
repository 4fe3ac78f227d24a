"""``backend="auto"``: which runtime to try first for an engine on this kind of CPU, and why.

The order comes from ``ptq4ris bench`` runs recorded in docs/RESULTS.md ("Hardware table", issue 18): each
row below names the CPU class and engine kind it was measured on. ``Engine.load`` then runs the engine's
golden cases and moves on to the next runtime when one does not reproduce the simulation, so the pick is
the fastest *correct* runtime, not only the fastest.
"""
from __future__ import annotations

# (CPU class, engine kind) → runtimes, fastest first, and the measurement behind the order.
MEASURED = {
    ("int32-dot", "quantized"): (("openvino", "onnxruntime"),
                                 "W8A8 segmenter fastest on OpenVINO on AVX512-VNNI Xeons (docs/RESULTS.md, issue 4) and "
                                 "on an AMD EPYC Zen 4 with AVX512-VNNI: 5.2 against 9.8 ms on ONNX Runtime "
                                 "(docs/RESULTS.md, hardware table)"),
    ("int16-pairs", "quantized"): (("onnxruntime", "openvino"),
                                   "W8A8 fastest on ONNX Runtime on AVX2 CPUs without VNNI: back to back 16.7 against "
                                   "20.8 ms (OpenVINO has no fast int8 GEMM there), frame by frame 20-25 against "
                                   "19-31 ms (docs/RESULTS.md, hardware table)"),
    ("any", "float"): (("openvino", "onnxruntime"),
                       "FP32 graphs fastest on OpenVINO on every x86 CPU measured (docs/RESULTS.md)"),
}


def cpu_class(cpu) -> str:
    """int16-pairs: x86 int8 GEMMs add u8 x s8 pairs in int16 (no VNNI); int32-dot: everything else."""
    return "int16-pairs" if cpu.saturates else "int32-dot"


def backend_order(meta: dict, cpu, installed: tuple[str, ...]) -> list[tuple[str, str]]:
    """[(backend, why)] to try in turn, among the installed runtimes."""
    quantized = meta.get("quantization", {}).get("method", "fp32") != "fp32"
    key = (cpu_class(cpu), "quantized") if quantized else ("any", "float")
    order, source = MEASURED[key]
    picks = [b for b in order if b in installed]
    if not picks:
        from .artifact import EngineError
        raise EngineError("neither onnxruntime nor openvino is installed; pip install 'ptq4ris-core[runtime]' (ONNX Runtime) or 'ptq4ris-core[openvino]'")
    if picks[0] != order[0]:
        source = f"{order[0]} is not installed; {source}"
    return [(b, f"auto: {source}" if i == 0 else f"auto: {picks[0]} failed its self-check here, so the next "
             f"fastest ({source})") for i, b in enumerate(picks)]
