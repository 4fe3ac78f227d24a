"""The node's parameters: names, types, defaults, and the checks that name a wrong value."""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class NodeParams:
    engine_path: str = ""
    backend: str = "auto"  # optionally ':f32' / ':bf16' / ':f16' for OpenVINO's float parts
    providers: tuple = ("",)
    device: str = "CPU"
    threads: int = 2
    mask_threshold: float = 0.5
    image_transport: str = "raw"  # raw | compressed
    image_reliability: str = "reliable"  # reliable | best_effort
    image_depth: int = 1
    publish_overlay: bool = False
    max_rate_hz: float = 0.0  # 0: as fast as frames and the engine allow
    command_timeout_s: float = 0.0  # 0: a command never expires
    max_command_chars: int = 1000
    # More command sources (a speech recogniser's transcript, a UI): the latest command from any wins.
    command_topics: tuple = ("command",)
    min_command_confidence: float = 0.0  # commands whose source says it is less sure than this are ignored
    max_image_pixels: int = 40_000_000
    diagnostics_period_s: float = 5.0
    autostart: bool = True  # configure and activate at start (no lifecycle manager needed)


TYPES = {f.name: f.type for f in fields(NodeParams)}
PY = {"str": str, "int": int, "float": (int, float), "bool": bool, "tuple": (list, tuple)}


def validate(values: dict) -> tuple[NodeParams, list[str]]:
    """Returns the parameters and a list of problems, each naming the parameter and what is wrong."""
    problems = []
    out = {}
    for f in fields(NodeParams):
        v = values.get(f.name, f.default)
        want = PY[f.type]
        if isinstance(v, bool) and f.type in ("int", "float"):
            problems.append(f"{f.name} must be a number, got {v!r}")
            continue
        if not isinstance(v, want):
            problems.append(f"{f.name} must be {f.type.replace('tuple', 'a list of strings')}, got {type(v).__name__} {v!r}")
            continue
        if f.type == "tuple":
            v = tuple(x for x in v if x != "")  # YAML cannot type an empty list: [""] stands for none
        out[f.name] = float(v) if f.type == "float" else v
    p = NodeParams(**{**{f.name: f.default for f in fields(NodeParams)}, **out})
    from ptq4ris_core.engine.engine import EngineError, parse_backend
    try:
        parse_backend(p.backend)
        bad_backend = ""
    except EngineError as e:
        bad_backend = f"backend: {e}"
    checks = [
        (not p.engine_path, "engine_path is empty; set it to an engine folder made by 'ptq4ris export'"),
        (bad_backend, bad_backend),
        (not 0.0 < p.mask_threshold < 1.0, f"mask_threshold must be in (0, 1), got {p.mask_threshold}"),
        (p.image_transport not in ("raw", "compressed"), f"image_transport must be raw or compressed, got {p.image_transport!r}"),
        (p.image_reliability not in ("reliable", "best_effort"),
         f"image_reliability must be reliable or best_effort, got {p.image_reliability!r}"),
        (p.image_depth < 1, f"image_depth must be at least 1, got {p.image_depth}"),
        (p.threads < 1, f"threads must be at least 1, got {p.threads}"),
        (p.max_rate_hz < 0, f"max_rate_hz must be >= 0, got {p.max_rate_hz}"),
        (p.command_timeout_s < 0, f"command_timeout_s must be >= 0, got {p.command_timeout_s}"),
        (p.max_command_chars < 1, f"max_command_chars must be at least 1, got {p.max_command_chars}"),
        (not p.command_topics, "command_topics is empty; list at least one topic, e.g. [command]"),
        (not 0.0 <= p.min_command_confidence <= 1.0,
         f"min_command_confidence must be in [0, 1], got {p.min_command_confidence}"),
        (p.max_image_pixels < 1, f"max_image_pixels must be at least 1, got {p.max_image_pixels}"),
        (p.diagnostics_period_s <= 0, f"diagnostics_period_s must be > 0, got {p.diagnostics_period_s}"),
    ]
    problems += [msg for bad, msg in checks if bad and not any(msg.split()[0] in q for q in problems)]
    return p, problems
