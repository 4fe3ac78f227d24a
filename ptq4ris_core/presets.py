"""Calibration presets (``calibration/*.yaml``): bits, method, options and calibration set in one file.

``resolve`` merges a preset with explicit choices (explicit wins), so the CLI and the demo build
a calibration run the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

PRESET_DIR = Path(__file__).resolve().parent.parent / "calibration"


def option_value(v):
    """Option values as the CLI and YAML spell them: 'true'/'false'/'none' and numbers become Python values."""
    if not isinstance(v, str):
        return v
    named = {"true": True, "false": False, "none": None}
    if v.lower() in named:
        return named[v.lower()]
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def parse_option(kv: str):
    """'rorq=element' → ('rorq', 'element')."""
    if "=" not in kv:
        raise InputError(f"option {kv!r} is not KEY=VALUE (e.g. rorq=element, drq=false)")
    k, v = kv.split("=", 1)
    return k, option_value(v)


def parse_method_spec(spec: str) -> tuple[str, dict]:
    """'ptq4ris:rorq=element,drq=false' → ('ptq4ris', {'rorq': 'element', 'drq': False})."""
    name, _, opts = spec.partition(":")
    return name, dict(parse_option(kv) for kv in opts.split(",") if kv)


def cell_method(spec: str, bits: str) -> tuple[str, dict]:
    """A table cell's method: 'ptq4ris:rorq=element' as written, or 'ptq4ris@preset': the options of
    the shipped preset for these bits (calibration/W4A4.yaml for W4A4), i.e. the method as we ship it;
    'ptq4ris@preset:recon=true': the preset with options added or changed."""
    if "@preset" not in spec:
        return parse_method_spec(spec)
    name, _, extra = spec.partition("@preset")
    path = PRESET_DIR / f"{bits.upper()}.yaml"
    preset = load_preset(path)
    if not takes_preset_options(name, preset):
        raise InputError(f"{path} is a preset for method {preset.get('method')!r}, not {name!r}")
    options = {k: option_value(v) for k, v in (preset.get("options") or {}).items()}
    return name, {**options, **parse_method_spec(extra)[1]}


def takes_preset_options(name: str, preset: dict) -> bool:
    """Whether method ``name`` takes the options of a preset written for its method: the same method, or one
    built on it (mixq-* on ptq4ris: mixed bits over PTQ4RIS's quantizers)."""
    from .methods import REGISTRY
    base = REGISTRY.get(preset.get("method", "ptq4ris"))
    return name in REGISTRY and base is not None and issubclass(REGISTRY[name], base)


def load_preset(path) -> dict:
    import yaml
    p = Path(path)
    if not p.is_file():
        raise InputError(f"preset {p} not found; presets live in calibration/ (e.g. calibration/W8A8.yaml)")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise InputError(f"preset {p} is not valid YAML ({e})") from e


@dataclass
class CalibrationPlan:
    method_name: str
    method: object
    w_bits: int
    a_bits: int
    n: int
    seed: int
    overrides: list
    options: dict


def resolve(preset: dict | None = None, method: str | None = None, bits: str | None = None, options=(),
            n: int | None = None, seed: int | None = None) -> CalibrationPlan:
    from .config import parse_bits
    from .methods import get_method
    preset = preset or {}
    name = method or preset.get("method", "ptq4ris")
    bits = bits or preset.get("bits")
    if not bits:
        raise InputError("give --bits WxAy (e.g. W8A8) or --preset calibration/W8A8.yaml")
    w, a = parse_bits(bits)
    opts = {k: option_value(v) for k, v in (preset.get("options") or {}).items()} \
        if takes_preset_options(name, preset) else {}
    opts.update(dict(parse_option(kv) for kv in options))
    cal = preset.get("calibration", {})
    try:
        m = get_method(name, **opts)
    except TypeError as e:
        raise InputError(f"method {name} does not take these options {opts} ({e})") from e
    return CalibrationPlan(name, m, w, a, n if n is not None else cal.get("n", 32),
                           seed if seed is not None else cal.get("seed", 0),
                           [tuple(o) for o in preset.get("overrides", [])], opts)


def calibrate_plan(model, plan: CalibrationPlan, progress: bool = True, resume_dir=None, scale_out=None):
    """(quantized model, report) for a resolved plan (``resume_dir``, ``scale_out``: see ``calib.calibrate``)."""
    from .calib.calibrate import CalibrationSet, calibrate
    return calibrate(model, plan.method, plan.w_bits, plan.a_bits, CalibrationSet(plan.n, plan.seed),
                     overrides=plan.overrides, progress=progress, resume_dir=resume_dir, scale_out=scale_out)
