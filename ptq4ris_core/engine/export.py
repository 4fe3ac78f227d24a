"""Export a RIS model to an engine folder: ``text_encoder.onnx`` (token ids → word features) and
``segmenter.onnx`` (image + word features → mask logits), the tokenizer, and meta.json."""
from __future__ import annotations

import platform
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.text_encoder import minilm_dir
from .artifact import SEG_GRAPH, TEXT_GRAPH, TEXT_OUTPUTS, TOKENIZER_FILES, write_meta
from .cpu import cpu_int8, max_pair_sum, pair_safe
from .golden import GOLDEN_FILE, write_golden
from .qdq import has_packed_weights
from .targets import weights_for_target

OPSET = 17


class _TextEncoder(nn.Module):
    """Token ids and mask → word features and mask: the part of the model that runs once per command."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, mask):
        return self.model.text_encoder(ids, mask), mask.clone()


class _Segmenter(nn.Module):
    """Image + word features → mask logits: the part that runs every frame. The image comes resized, as
    (1, 3, S, S) uint8 RGB: the graph normalises it, where the runtime fuses the arithmetic into one pass,
    instead of a float copy in NumPy per frame. (Taking NHWC and transposing in the graph measured slower on
    OpenVINO: a uint8 transpose, then a float reorder back to the NHWC its convs use.)"""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(model.cfg.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(model.cfg.std).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, image, words, word_mask):
        x = (image.float() - self.mean) / self.std
        return self.model.segment_features(x, words, word_mask)


def _export(module, args, path, inputs, outputs):
    module.eval()
    # Packed int4 weights must reach the file packed: the exporter's own folding would unpack them
    # (the runtimes fold the unpacking at load instead).
    packed = has_packed_weights(module)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          opset_version=OPSET, dynamo=False, do_constant_folding=not packed)
    module.eval()  # the exporter restores train(True) on the wrapper, which would reach BatchNorm
    _weights_beside(Path(path))


# Constants of at least this many bytes (every weight matrix, not the small shapes and scales) move to the file
# beside the graph.
EXTERNAL_MIN_BYTES = 1024


def _weights_beside(path: Path):
    """Store the graph's weights in ``<graph>.data`` beside it (ONNX external data). ONNX Runtime maps that file
    instead of copying it, so weights read only row by row stay on disk: the text encoder's 11.7 MB int8 word
    table costs the ROS node only the rows of the words it sees (docs/RESULTS.md, issue 22)."""
    import onnx
    model = onnx.load(str(path))
    graph, kept = model.graph, []
    for node in graph.node:
        value = node.attribute[0].t if node.op_type == "Constant" and node.attribute[0].name == "value" else None
        if value is not None and len(value.raw_data) >= EXTERNAL_MIN_BYTES:
            value.name = node.output[0]
            graph.initializer.append(value)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # save_model appends to an existing file
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=EXTERNAL_MIN_BYTES)
    if data.exists():  # a graph without a weight of EXTERNAL_MIN_BYTES gets none
        data.chmod(path.stat().st_mode & 0o777)  # onnx creates it owner-only; readable like the graph itself


def _export_graphs(model, out: Path):
    ids = torch.full((1, model.cfg.max_tokens), 0, dtype=torch.int64)
    ids[0, :4] = torch.tensor([101, 2417, 4418, 102])  # "red circle"
    mask = (ids != 0).to(torch.int64)
    _export(_TextEncoder(model), (ids, mask), out / TEXT_GRAPH, ["input_ids", "attention_mask"], list(TEXT_OUTPUTS))
    with torch.no_grad():
        words = model.text_encoder(ids, mask)
    image = torch.zeros(1, 3, model.cfg.image_size, model.cfg.image_size, dtype=torch.uint8)
    _export(_Segmenter(model), (image, words, mask), out / SEG_GRAPH, ["image", *TEXT_OUTPUTS], ["logits"])


# The expression kinds of the golden cases: those that read the coordinate channels, which saturation hurts
# most (issue 18: position, relation and superlative fell to 44-53 mIoU, attribute held).
GOLDEN_KINDS = ("position", "relation", "superlative")


def _golden_cases(model) -> list[dict]:
    """The golden cases' inputs, and the logits the model computes for them as it is now (inside
    ``deploy_mode``: the deploy simulation)."""
    from ..data import SceneGenerator
    from ..models import Preprocessor
    gen, pre = SceneGenerator(model.cfg.image_size), Preprocessor(model.cfg)
    cases = []
    with torch.no_grad():
        for i, kind in enumerate(GOLDEN_KINDS):
            s = gen.sample("test", i, kind)
            ids, m = pre.texts([s.text])
            image = torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1)[None]))
            words, wm = _TextEncoder(model)(ids, m)
            cases.append({"text": s.text, "image": image.numpy(), "input_ids": ids.numpy(),
                          "attention_mask": m.numpy(), "logits": _Segmenter(model)(image, words, wm).numpy()})
    return cases


def _stored_weights(model) -> dict:
    """{integer layer: what its weights store}: weight and input bits (they differ per layer under mixed
    precision), the largest code, the largest pair sum in any order,
    and whether every u8 x s8 pair of it fits a saturating int16."""
    from ..nn import QuantLinear
    stores = {}
    for name, mod in model.named_modules():
        parts = getattr(mod, "_deploy", None)
        if not isinstance(parts, list):
            continue
        axis = 1 if isinstance(mod, QuantLinear) else 0  # linear codes are stored transposed (in, out)
        pair = max(max_pair_sum(d["w"].numpy(), axis) for d in parts)
        stores[name] = {"weight_bits": mod.weight_quantizer.bits,
                        "input_bits": getattr(mod.input_quantizer, "bits", None),
                        "max_code": max(int(d["w"].abs().max()) for d in parts),
                        "max_pair_sum": pair, "int16_pair_safe": pair_safe(pair)}
    return stores


def export_engine(model, out: str | Path, info: dict | None = None, batches=None, symmetric: bool = False,
                  exact: str = "auto", target: str = "portable") -> Path:
    """Export a float model, or a calibrated one (``info["quantization"]`` set): its deployable
    layers become integer QDQ layers, the rest runs in float, and meta.json says which is which.
    ``batches`` (the calibration inputs) calibrate the conv output quantizers that integer convs need.
    ``symmetric``: zero point 0 on every activation (int8), the form TensorRT takes. ``exact``: when
    DRQ-GELU and RORQ's groups run exactly, as several integer GEMMs (auto: below 8 bits; always;
    never: one uniform stand-in each). ``target``: portable (weights that no CPU saturates), vnni (full
    8-bit weights: right only on CPUs with VNNI, AMX, ARM or GPUs), auto (the target for this CPU); see
    ``targets.py``. The engine folder also gets the golden cases of its self-check (``golden.py``)."""
    import onnx

    from ..nn import QuantMatMul, QuantModule
    from .qdq import deploy_mode
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    cfg = model.cfg
    quant = dict((info or {}).get("quantization", {"method": "fp32", "bits": "FP32"}))
    if any(isinstance(m, QuantModule) for m in model.modules()):
        quant["symmetric_activations"], quant["exact_groups"] = symmetric, exact
        with weights_for_target(model, target) as resolved, deploy_mode(model, batches, symmetric, exact) as how:
            _export_graphs(model, out)
            golden = _golden_cases(model)
            stores = _stored_weights(model)
        quant["target"] = {"requested": target, "stored": resolved, "exported_on": cpu_int8().describe(),
                           "int16_pair_safe": all(s["int16_pair_safe"] for s in stores.values())}
        quant["weights"] = stores
        quantized = [n for n, m in model.named_modules() if isinstance(m, QuantModule) and m.quantizers()]
        quant["integer_layers"] = how
        quant["float_layers"] = {n: "attention matmul: kept float (faster than int8 on these runtimes)"
                                 if isinstance(model.get_submodule(n), QuantMatMul)
                                 else "no integer form for its quantizers (or no calibration data for a conv's "
                                 "output): runs float"
                                 for n in quantized if n not in how}
    else:
        _export_graphs(model, out)
        golden = _golden_cases(model)
    texts = write_golden(out / GOLDEN_FILE, golden)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, out / name)
    import onnxruntime
    meta = {"model": {"name": (info or {}).get("model", "default"), "config": cfg.to_dict(),
                      "weights_sha256": (info or {}).get("weights_sha256")},
            "quantization": quant,
            "input": {"image_size": cfg.image_size, "layout": "NCHW", "dtype": "uint8", "mean": list(cfg.mean), "std": list(cfg.std),
                      "color": "RGB"},
            "tokenizer": {"max_tokens": cfg.max_tokens, "lowercase": True},
            "opset": OPSET,
            "self_check": {"file": GOLDEN_FILE, "cases": texts},
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                         "python": platform.python_version()}}
    write_meta(out, meta)
    return out


def export_fp32(model_name: str, out) -> Path:
    """The float engine of a packaged model name or a .safetensors path."""
    from ..calib.saved import base_identity
    from ..models import load_model
    return export_engine(load_model(model_name), out, {"model": str(model_name),
                                                       "weights_sha256": base_identity(model_name)["sha256"]})


def export_quantized(calibrated, out, symmetric: bool = False, exact: str = "auto", target: str = "portable") -> Path:
    """The integer engine of a folder written by ``ptq4ris calibrate`` (or ``save_quantized``)."""
    from ..calib.calibrate import CalibrationSet
    from ..calib.saved import load_quantized
    from ..models import Preprocessor
    model, meta = load_quantized(calibrated)
    cal = meta["calibration"]
    batches = CalibrationSet(cal["n"], cal["seed"]).build(model.cfg, Preprocessor(model.cfg))
    info = {"model": meta["base"]["name"], "weights_sha256": meta["base"]["sha256"], "quantization": {
        "method": meta["method"], "options": meta.get("options", {}), "bits": meta["bits"],
        "calibration": meta["calibration"], "config": meta["config"], "source": str(calibrated)}}
    return export_engine(model, out, info, batches, symmetric, exact, target)
