"""``Engine``: load an engine folder, check it, and segment images on ONNX Runtime or OpenVINO."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..frames import TextCache, check_image, mask_from_logits, resize_rgb
from .artifact import SEG_GRAPH, TEXT_GRAPH, EngineError, read_meta
from .choice import backend_order
from .cpu import cpu_int8
from .golden import failure_message, read_golden, run_self_check
from .tokens import CommandTokenizer

BACKENDS = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("auto", "f32", "bf16", "f16")  # the float parts' precision; OpenVINO's choice, ONNX Runtime's is f32
log = logging.getLogger(__name__)


def ov_cache_dir(cache_dir="auto") -> str | None:
    """Where OpenVINO keeps compiled engines, so that a second load imports instead of compiling (compiling
    a W4A8 engine takes about 2 s on a 2-core CPU). ``auto``: $PTQ4RIS_CACHE_DIR, else
    $XDG_CACHE_HOME/ptq4ris/openvino, else ~/.cache/ptq4ris/openvino; None: no cache. A folder that cannot
    be created is skipped with a warning: the engine then compiles at every load."""
    if cache_dir is None:
        return None
    if cache_dir == "auto":
        cache_dir = os.environ.get("PTQ4RIS_CACHE_DIR") or Path(
            os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ptq4ris" / "openvino"
    path = Path(cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as e:
        log.warning("OpenVINO compile cache %s unusable (%s); engines compile at every load "
                    "(set PTQ4RIS_CACHE_DIR to a writable folder)", path, e)
        return None
    return str(path)


def _cache_key(root: str, graph_sha: str, *settings) -> str:
    """One cache folder per graph and compile settings. OpenVINO's own key misses both (tested): it serves
    the blob of a rewritten file at the same path, and a bf16 blob to an f32 load. The graph's SHA-256 is
    the one a verified load has checked; ``settings`` carry the weights file's (``<graph>.data``), which can
    change while the graph file stays the same."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return str(Path(root) / graph_sha[:32] / digest[:16])


class _OrtRunner:
    def __init__(self, path, providers, threads):
        import onnxruntime as ort
        available = ort.get_available_providers()
        providers = providers or ["CPUExecutionProvider"]
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise EngineError(f"ONNX Runtime provider(s) {unknown} not available here; available: {available}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # Worker threads sleep between calls instead of spinning: frames come one at a time with other work in
        # between (decoding, the node's callbacks), which spinning threads slow down on a small CPU. Frame by
        # frame the W8A8 segment() took 20-25 ms instead of 33; back to back it costs 5-17 % (docs/RESULTS.md,
        # issue 18).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own types; name the file
            raise EngineError(f"ONNX Runtime cannot load {path} ({str(e).splitlines()[0]}); re-export the engine") from e
        self.inputs = [i.name for i in self.sess.get_inputs()]
        self.outputs = [{o.name} for o in self.sess.get_outputs()]  # each output's names

    def __call__(self, feeds):
        return self.sess.run(None, feeds)


class _OvRunner:
    def __init__(self, path, device, threads, precision, extra=None, cache_dir=None):
        import openvino as ov
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
                  **({"CACHE_DIR": cache_dir} if cache_dir else {}), **(extra or {})}
        try:
            self.compiled = core.compile_model(str(path), device, config)
        except Exception as e:  # noqa: BLE001
            raise EngineError(f"OpenVINO cannot compile {path} for {device} ({str(e).splitlines()[0]})") from e
        self.inputs = [i.get_any_name() for i in self.compiled.inputs]
        self.outputs = [set(o.get_names()) for o in self.compiled.outputs]  # one tensor may carry several names
        self.request, self._bound = self.compiled.create_infer_request(), {}

    def int8_kernels(self) -> list[str]:
        """The kernels OpenVINO chose for the layers it runs at int8/uint8 (e.g. brgemm_avx512_amx_I8 with AMX,
        jit_avx2_I8 without VNNI): which int16-pair behaviour the integer layers get on this CPU."""
        kinds = set()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            prec = str(rt["runtimePrecision"].astype(str)).lower() if "runtimePrecision" in rt else ""
            if "primitiveType" in rt and prec in ("i8", "u8"):
                kinds.add(str(rt["primitiveType"].astype(str)))
        return sorted(kinds)

    def __call__(self, feeds):
        # Inputs are bound without a copy, and only when they change: the command's word features stay
        # bound from one frame to the next.
        import openvino as ov
        for name, array in feeds.items():
            if self._bound.get(name, (None,))[0] is not array:
                data = np.ascontiguousarray(array)  # kept here while bound: the tensor reads its memory
                data = data.view(data.dtype.str)  # ONNX Runtime's int64 arrays ('q') are unknown to OpenVINO's map
                self.request.set_tensor(name, ov.Tensor(data, shared_memory=True))
                self._bound[name] = (array, data)
        self.request.infer()
        return [self.request.get_tensor(o).data.copy() for o in self.compiled.outputs]


def parse_backend(spec: str, precision: str = "auto") -> tuple[str, str]:
    """'openvino:bf16' → ("openvino", "bf16"): a backend with its float precision, as the command line and
    the node's parameters write it. ``precision`` is the caller's own, which the spec may not contradict."""
    backend, _, given = str(spec).partition(":")
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}, optionally with "
                          f"':PRECISION' ({', '.join(PRECISIONS)}), e.g. openvino:bf16")
    for p in (given, precision):
        if p and p not in PRECISIONS:
            raise EngineError(f"unknown float precision {p!r} in {spec!r}; choose one of {', '.join(PRECISIONS)}")
    if given and precision != "auto" and given != precision:
        raise EngineError(f"backend {spec!r} asks for {given} but precision={precision!r} was given; say it once")
    return backend, given or precision


# bf16 float parts only for engines whose integer activations all have at least this many bits. Below it, a
# bf16 rounding just before a coarse activation grid moves whole steps: at W4A4 bf16 cost 1.1-1.4 mIoU against
# f32 and failed the AGQ engine's self-check; at 8 bits it costs nothing (docs/RESULTS.md, issue 20).
BF16_MIN_ACTIVATION_BITS = 8


def _ov_precision(precision: str, meta: dict, device: str) -> str:
    """``auto``: f32 for a float engine (it must compute what it says); for a quantized engine on the CPU, bf16
    for the parts that stay float when it computes bf16 natively (AVX512-BF16, AMX) and every integer activation
    has ``BF16_MIN_ACTIVATION_BITS``, f32 otherwise. The quantized engines' accuracy with bf16 is measured in
    docs/RESULTS.md."""
    if precision != "auto":
        return precision
    quant = meta.get("quantization", {})
    if quant.get("method", "fp32") == "fp32" or device.upper() != "CPU":
        return "f32"  # other devices: choose their precision yourself (openvino:f16 on a GPU)
    bits = [w["input_bits"] for w in quant.get("weights", {}).values() if w.get("input_bits")]
    if bits and min(bits) < BF16_MIN_ACTIVATION_BITS:
        return "f32"
    import openvino as ov
    try:
        caps = ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - an unknown device fails later, at compile, with its own message
        return "f32"
    return "bf16" if "BF16" in caps else "f32"


def runtime_label(backend: str, precision: str = "f32") -> str:
    """'openvino (bf16)': the runtime, and the float parts' precision where it is not f32."""
    return backend if precision == "f32" else f"{backend} ({precision})"


def _runs_on_cpu(backend: str, providers, device: str) -> bool:
    if backend == "openvino":
        return device.upper().startswith(("CPU", "AUTO", "HETERO", "MULTI"))
    return not providers or providers[0] == "CPUExecutionProvider"


def check_target(folder, meta: dict, on_cpu: bool) -> str | None:
    """Why an engine's stored weights would saturate int16 pairs on this CPU (``Engine.load`` refuses it, or
    warns when the caller allows it), or None when they cannot."""
    cpu = cpu_int8()
    target = meta.get("quantization", {}).get("target")
    if target is None or target["int16_pair_safe"] or not on_cpu or not cpu.saturates:
        return None
    source = meta["quantization"].get("source") or "CALIBRATED_DIR"
    return (f"{folder} stores full 8-bit weights (export target {target['stored']!r}), but this CPU adds u8 x s8 "
            f"pairs in a saturating int16: {cpu.describe()}. Its masks would be wrong "
            f"here. Re-export it for every CPU: ptq4ris export --quantized {source} --target portable --out {folder}"
            f"  (allow_unsafe=True / --allow-unsafe loads it anyway, for experiments)")


def _installed() -> tuple[str, ...]:
    import importlib.util
    return tuple(b for b in ("onnxruntime", "openvino") if importlib.util.find_spec(b) is not None)


class Engine:
    def __init__(self, folder: Path, meta: dict, backend: str, text_runner, seg_runner, tokenizer,
                 precision: str = "f32", why: str = ""):
        self.folder, self.meta, self.backend, self.precision = folder, meta, backend, precision
        self.why = why  # why this backend and precision (``backend="auto"``), or that the caller chose them
        self.self_check: dict | None = None  # the golden cases' result at load (``golden.py``)
        self._text, self._seg, self.tokenizer = text_runner, seg_runner, tokenizer
        self.size = int(meta["input"]["image_size"])
        self.max_tokens = int(meta["tokenizer"]["max_tokens"])
        wanted = set(seg_runner.inputs) - {"image"}  # what the text graph must give the segmenter
        self._text_names = [sorted(names & wanted) for names in text_runner.outputs]
        if {n for names in self._text_names for n in names} != wanted:
            raise EngineError(f"{folder}: the segmenter takes {seg_runner.inputs}, but the text graph gives "
                              f"{text_runner.outputs} and the image; the graphs come from different exports, re-export")
        self.text_features = TextCache(tokenizer.count, self.max_tokens, self._encode)

    @classmethod
    def load(cls, path, backend: str = "auto", providers=None, device: str = "CPU", threads: int = 2,
             verify: bool = True, precision: str = "auto", openvino_config: dict | None = None,
             cache_dir="auto", allow_unsafe: bool = False, self_check: bool = True) -> "Engine":
        """``backend``: auto | onnxruntime | openvino, optionally with the float precision after a colon
        (``openvino:bf16``); auto takes the runtime measured fastest for this kind of CPU (``choice.py``) whose
        self-check passes. ``providers``: ONNX Runtime execution providers. ``device``: OpenVINO device
        (CPU, GPU, NPU). ``precision``: the float parts' precision on OpenVINO (auto, f32, bf16, f16; auto: f32
        for a float engine, bf16 for a quantized one where the CPU has it). ``openvino_config``: more
        OpenVINO properties, e.g. {"PERFORMANCE_HINT": "LATENCY"}. ``cache_dir``: OpenVINO's compile cache
        (``ov_cache_dir``; None, or ``verify=False``, compiles at every load).

        An engine whose weights saturate on this CPU (export target vnni on a CPU without VNNI) is refused,
        and so is one whose golden cases do not reproduce the deploy simulation here (``golden.py``);
        ``allow_unsafe=True`` loads both with a warning, for experiments. ``self_check=False`` skips the
        golden cases (``Engine.self_check`` is then None)."""
        folder = Path(path)
        backend, precision = parse_backend(backend, precision)
        meta = read_meta(folder, verify=verify)
        if backend == "onnxruntime" and precision not in ("auto", "f32"):
            raise EngineError(f"ONNX Runtime runs an engine's float parts in f32; {precision} is an OpenVINO "
                              f"precision (backend openvino:{precision})")
        if backend == "openvino" and providers:
            raise EngineError("providers are ONNX Runtime's; for OpenVINO choose device= (CPU, GPU, NPU)")
        candidates = backend_order(meta, cpu_int8(), installed=_installed()) if backend == "auto" \
            else [(backend, "chosen by the caller")]
        failures = []
        for name, why in candidates:
            refusal = check_target(folder, meta, _runs_on_cpu(name, providers, device))
            if refusal and not allow_unsafe:
                raise EngineError(refusal)
            if refusal:
                log.warning("%s", refusal)
            eng = cls._build(folder, meta, name, providers, device, threads, precision, openvino_config,
                             cache_dir if verify else None, why)
            if not self_check:
                return eng
            eng.self_check = eng.run_self_check()
            if eng.self_check["passed"]:
                return eng
            message = failure_message(folder, eng.self_check, eng.runtime, cpu_int8().describe())
            if allow_unsafe:
                log.warning("%s", message)
                return eng
            failures.append(message)
            if len(candidates) > 1:
                log.warning("%s; trying the next runtime", message)
        raise EngineError(failures[-1] if len(failures) == 1 else " | ".join(failures))

    @classmethod
    def _build(cls, folder, meta, backend, providers, device, threads, precision, openvino_config, cache_dir,
               why) -> "Engine":
        precision = _ov_precision(precision, meta, device) if backend == "openvino" else "f32"
        # The two graphs compile one after the other: compiled at once in two threads (0.3 s sooner), they were
        # the likely cause of a test process whose locale turned to "C" (ASCII) (docs/RESULTS.md, issue 4).
        if backend == "onnxruntime":
            runners = [_OrtRunner(folder / g, providers, threads) for g in (TEXT_GRAPH, SEG_GRAPH)]
        else:
            cache = ov_cache_dir(cache_dir) if cache_dir is not None else None
            runners = [_OvRunner(folder / g, device, threads, precision, openvino_config,
                                 cache and _cache_key(cache, meta["files"][g], meta["files"].get(g + ".data"), device,
                                                      threads, precision, openvino_config))
                       for g in (TEXT_GRAPH, SEG_GRAPH)]
        tok = CommandTokenizer(folder, int(meta["tokenizer"]["max_tokens"]))
        return cls(folder, meta, backend, runners[0], runners[1], tok, precision, why)

    def run_self_check(self) -> dict:
        """Run the golden cases stored at export on this runtime: {passed, cases: [errors], ms}."""
        cases = read_golden(self.folder / self.meta["self_check"]["file"], self.meta["self_check"]["cases"])
        return run_self_check(cases, self.text_feeds, lambda feeds: self._seg(feeds)[0], self.precision)

    def text_feeds(self, ids: np.ndarray, mask: np.ndarray) -> dict:
        """Token ids and mask → the text graph's word features and mask, as the segmenter takes them."""
        arrays = self._text({"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)})
        return {name: a for names, a in zip(self._text_names, arrays) for name in names}

    def _encode(self, text: str) -> dict:
        """The command's word features and mask, as the segmenter takes them: {input name: array}."""
        return self.text_feeds(*self.tokenizer.encode(text))

    @property
    def runtime(self) -> str:
        return runtime_label(self.backend, self.precision)

    @property
    def text_encodes(self) -> int:
        return self.text_features.encodes

    def preprocess(self, image: np.ndarray, bgr: bool = False) -> np.ndarray:
        """(H, W, 3) uint8 RGB (or BGR, ``bgr``) → the segmenter's image input: (1, 3, S, S) uint8 RGB (the
        graph normalises). A BGR frame's channels are swapped after the resize, on S x S pixels only."""
        small = resize_rgb(image, self.size)
        return np.ascontiguousarray(small.transpose(2, 0, 1)[None, ::-1 if bgr else 1])

    def feeds(self, image: np.ndarray, text: str, bgr: bool = False) -> dict:
        """The segmenter's inputs: the preprocessed image and the command's cached word features and mask."""
        return {"image": self.preprocess(image, bgr), **self.text_features(text)}

    def _run(self, image: np.ndarray, text: str, bgr: bool = False) -> np.ndarray:
        return self._seg(self.feeds(image, text, bgr))[0]

    def logits(self, image: np.ndarray, text: str) -> np.ndarray:
        """Raw (1, 2, S, S) mask logits at the model's input size."""
        return self._run(check_image(image), text)

    def segment(self, image: np.ndarray, text: str, threshold: float = 0.5,
                bgr: bool = False) -> tuple[np.ndarray, float]:
        """(H, W, 3) uint8 RGB + command → mask (H, W) uint8 0/255 at the image's size, and a score.

        A pixel is in the mask when its foreground probability exceeds ``threshold``. ``bgr``: the image's
        channels are in BGR order (OpenCV, most ROS cameras): cheaper than converting the frame first."""
        image = check_image(image)
        return mask_from_logits(self._run(image, text, bgr), image.shape[0], image.shape[1], threshold)

    @property
    def target(self) -> str:
        """What the integer weights store: portable, vnni, or float (an FP32 engine)."""
        t = self.meta.get("quantization", {}).get("target")
        return t["stored"] if t else "float"

    def int8_kernels(self) -> list[str] | None:
        """The int8 kernels OpenVINO runs the integer layers of both graphs with; None on ONNX Runtime, which
        does not say (its MLAS kernels follow the CPU's flags: ``cpu.py``)."""
        runners = [r for r in (self._text, self._seg) if isinstance(r, _OvRunner)]
        return sorted({k for r in runners for k in r.int8_kernels()}) if runners else None

    def describe(self) -> str:
        q = self.meta.get("quantization", {})
        return (f"{self.meta['model']['name']} {q.get('method', '?')} {q.get('bits', '?')} (target {self.target}) on "
                f"{self.backend} (float parts {self.precision})")

    def status(self) -> str:
        """One line for people: the target, the runtime and why, the self-check (the CLI, the demo, the node)."""
        r = self.report()
        return f"target {r['target']}, {r['runtime']} ({r['why']}); self-check {r['self_check']}"

    def report(self) -> dict:
        """What the engine is doing on this machine, for people and diagnostics: CPU, target, runtime, self-check."""
        check = self.self_check
        return {"cpu": cpu_int8().describe(), "target": self.target, "runtime": self.runtime, "why": self.why,
                "self_check": "skipped" if check is None else
                ("passed" if check["passed"] else "FAILED") + f" ({len(check['cases'])} golden cases, "
                f"largest mean error {max(c['relative_mean_error'] for c in check['cases']):.1%} of the logits, "
                f"{check['ms']:.0f} ms)"}
