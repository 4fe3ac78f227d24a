"""Mixed precision: the integer program against brute force, its budgets and refusals, the LRP rules'
conservation, the KL against SciPy, and mixq-kl end to end on the small model, into an engine."""
import importlib.util
import itertools
import json

import numpy as np
import pytest
import torch
from scipy.special import rel_entr
from torch import nn

from ptq4ris_core.config import ConfigError
from ptq4ris_core.mixed import importance as I
from ptq4ris_core.mixed.allocate import Problem, allocate, layer_bops, layer_size_bits, smallest, uniform_budget


def _problem(n=5, seed=0, w=(2, 4, 8), a=(4, 8)):
    rng = np.random.default_rng(seed)
    w_err = [{b: float(rng.uniform(0.5, 2) * (8 - b) ** 2) for b in w} for _ in range(n)]
    a_err = [{b: float(rng.uniform(0.5, 2) * (8 - b) ** 2) for b in a} for _ in range(n)]
    w_err[2] = {}  # an attention matmul: inputs only
    return Problem(names=[f"l{i}" for i in range(n)], params=np.array([100, 400, 0, 50, 300.0][:n]),
                   macs=rng.uniform(1e3, 1e4, n), matmul=np.array([i == 2 for i in range(n)]), w_err=w_err,
                   a_err=a_err, importance=rng.uniform(0.1, 1, n), pairs=[(i, i + 1) for i in range(n - 1)],
                   synergy=rng.uniform(0.5, 3, n - 1))


def _brute_force(p, size, bops, coupling):
    """Every assignment, scored with the objective as the docstring of allocate.py writes it."""
    imp = p.importance / p.importance.mean() + 0.01
    low_err = [max(p.w_err[l].values(), default=0) + max(p.a_err[l].values(), default=0) for l in range(len(p.names))]
    bits = sorted({b for l in range(len(p.names)) for c in p.candidates(l) for b in c if b is not None})
    delta2 = (bits[-1] - bits[0]) ** 2
    syn = p.synergy / p.synergy.max()
    best = None
    for choice in itertools.product(*[p.candidates(l) for l in range(len(p.names))]):
        s = sum(layer_size_bits(p, l, c[0]) for l, c in enumerate(choice))
        o = sum(layer_bops(p, l, *c) for l, c in enumerate(choice))
        if s > size + 1e-6 or o > bops + 1e-6:
            continue
        f = sum(imp[l] * (p.w_err[l].get(c[0], 0) + p.a_err[l].get(c[1], 0)) for l, c in enumerate(choice))
        for j, (l, m) in enumerate(p.pairs):
            for side in (0, 1):
                x, y = choice[l][side], choice[m][side]
                if x is not None and y is not None:
                    f += coupling * np.mean(low_err) * syn[j] * (x - y) ** 2 / delta2
        if best is None or f < best[0] - 1e-12:
            best = (f, choice)
    return best


@pytest.mark.parametrize("coupling,seed", [(0.0, 0), (0.5, 1), (5.0, 2)])
def test_the_program_finds_the_brute_force_optimum_within_both_budgets(coupling, seed):
    p = _problem(seed=seed)
    size, bops = uniform_budget(p, 4, 4)
    res = allocate(p, size, bops, coupling)
    f, choice = _brute_force(p, size, bops, coupling)
    assert res["optimal"] and res["objective"] == pytest.approx(f, rel=1e-6, abs=1e-9)
    got = [tuple(res["bits"][n]) for n in p.names]
    assert sum(layer_size_bits(p, l, c[0]) for l, c in enumerate(got)) <= size
    assert sum(layer_bops(p, l, *c) for l, c in enumerate(got)) <= bops
    assert res["size_bits"] <= size and res["bops"] <= bops


def test_strong_coupling_pulls_neighbours_to_the_same_bits():
    p = _problem(seed=3)
    size, bops = uniform_budget(p, 8, 8)  # room for anything: only the errors and the coupling decide
    p.w_err[0] = {2: 0.0, 4: 0.5, 8: 1.0}  # layer 0 alone takes 2-bit weights (its error is least there)
    p.w_err[1] = {2: 1.0, 4: 0.5, 8: 0.0}  # its neighbour alone takes 8
    loose = allocate(p, size, bops, 0.0)["bits"]
    tight = allocate(p, size, bops, 1e6)["bits"]
    assert (loose["l0"][0], loose["l1"][0]) == (2, 8) and tight["l0"][0] == tight["l1"][0]


def test_an_infeasible_budget_names_the_binding_constraint_and_the_smallest_feasible_value():
    p = _problem()
    min_size, min_bops = smallest(p)
    with pytest.raises(ConfigError, match="size constraint binds") as e:
        allocate(p, min_size - 1, None)
    assert f"{min_size / 8e6:.3f} MB" in str(e.value)
    with pytest.raises(ConfigError, match="bit-operations constraint binds"):
        allocate(p, None, min_bops * 0.99)
    res = allocate(p, min_size, min_bops)  # the smallest values named are feasible, together
    assert res["size_bits"] == pytest.approx(min_size) and res["bops"] == pytest.approx(min_bops)


def test_an_empty_candidate_set_is_refused():
    from ptq4ris_core.methods import get_method
    p = _problem()
    p.w_err[0], p.a_err[0] = {}, {}
    with pytest.raises(ConfigError, match="l0 has an empty candidate set"):
        allocate(p, 1e9, 1e12)
    with pytest.raises(ConfigError, match="candidate set is empty"):
        get_method("mixq-kl", w_cands="")
    with pytest.raises(ConfigError, match="must include 8"):
        get_method("mixq-lrp", a_cands="4/6")


def test_unmeasurable_rises_get_a_floor_that_grows_as_the_bits_fall():
    """A rise measured as 0 is below the study's resolution, not free: it gets the smallest positive rise
    scaled by 4 per bit below the highest candidate under 8, and no setting costs less than one with more bits."""
    from ptq4ris_core.mixed.sensitivity import resolved
    measured = [{3: 0.0, 4: 0.0, 6: 0.0, 8: 0.0},        # nothing measurable
                {3: 2e-5, 4: 3e-5, 6: 1e-6, 8: 0.0},     # 4 bits measured worse than 3: chance
                {3: 9e-5, 4: 4e-5, 6: 5e-6, 8: 0.0}]     # monotone and above the floor: as measured
    r = 1e-6  # the smallest positive rise
    zero, chance, clean = resolved(measured)
    assert zero == pytest.approx({8: 0.0, 6: r, 4: 16 * r, 3: 64 * r})
    assert chance == pytest.approx({8: 0.0, 6: 1e-6, 4: 3e-5, 3: 6.4e-5})
    assert clean == measured[2]


def test_with_room_in_the_budget_unmeasurable_layers_keep_more_bits():
    """Taken at face value, zeros leave such layers at the lowest candidate although the budget has room;
    resolved, the program spends the budget on them."""
    from ptq4ris_core.mixed.sensitivity import resolved
    p = _problem(seed=4)
    p.w_err = [{b: 0.0 for b in e} for e in p.w_err]  # no weight rise measurable anywhere
    p.w_err[0] = {2: 1e-3, 4: 1e-4, 8: 0.0}
    size, bops = uniform_budget(p, 6, 6)
    at_face_value = allocate(p, size, bops)
    p.w_err = resolved(p.w_err)
    spent = allocate(p, size, bops)
    assert spent["size_bits"] > at_face_value["size_bits"] and spent["size_bits"] <= size and spent["bops"] <= bops


def test_mask_kl_equals_scipys_relative_entropy():
    torch.manual_seed(0)
    ref, other = torch.randn(2, 2, 5, 7), torch.randn(2, 2, 5, 7)
    p, q = ref.softmax(1).numpy(), other.softmax(1).numpy()
    want = rel_entr(p, q).sum(1).reshape(2, -1).mean(1)
    assert np.allclose(I.mask_kl(ref, other).numpy(), want)
    assert torch.all(I.mask_kl(ref, ref) == 0)


class _Block(nn.Module):
    """A bias-free attention + LayerNorm + GELU block: with the LRP rules it is linear in its input."""

    def __init__(self, d=8):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.norm = nn.LayerNorm(d, bias=False)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d, bias=False), nn.Linear(2 * d, d, bias=False)
        self.softmax, self.act = nn.Softmax(-1), nn.GELU()

    def forward(self, x):
        att = self.softmax(self.q(x) @ self.k(x).transpose(-1, -2))
        h = self.norm(att @ self.v(x) + x)
        return self.fc2(self.act(self.fc1(h)))


def test_the_lrp_rules_conserve_relevance_and_plain_gradients_do_not():
    torch.manual_seed(0)
    blk = _Block()
    x = torch.randn(3, 6, 8)

    def relevance(rules):
        hooks = [m.register_forward_hook(I.LRP_RULES[type(m)]) for m in blk.modules() if type(m) in I.LRP_RULES] if rules else []
        xi = x.clone().requires_grad_(True)
        f = blk(xi).sum()
        f.backward()
        for h in hooks:
            h.remove()
        return float((xi.detach() * xi.grad).sum()), float(f.detach())

    r, f = relevance(True)
    assert r == pytest.approx(f, rel=1e-4)  # Σ_input R = f (Ali et al.'s conservation)
    r0, f0 = relevance(False)
    assert f0 == pytest.approx(f, rel=1e-5) and abs(r0 - f0) > 0.05 * abs(f0)  # same output, not conserved


def test_zeroing_a_layer_the_output_ignores_costs_nothing():
    torch.manual_seed(0)
    used, unused = nn.Linear(4, 2), nn.Linear(4, 2)

    def run(b):
        unused(b[0])  # runs, and its output is thrown away
        return used(b[0]).T[None, :, :, None]

    rows = I.kl_importance({"used": used, "unused": unused}, [(torch.randn(5, 4),)], run)
    assert rows[0].item() > 0 and rows[1].item() == 0


def test_lrp_gives_no_relevance_to_query_and_key_and_splits_a_shared_input_by_its_readers():
    torch.manual_seed(0)
    blk = _Block()
    layers = {n: getattr(blk, n) for n in ("q", "k", "v", "fc1", "fc2")}
    rel = I.lrp_relevance(blk, layers, [(torch.randn(3, 6, 8),)],
                          lambda b: torch.stack([torch.zeros(3, 6, 8), blk(b[0].requires_grad_(True))], 1))
    assert rel[0] == 0 and rel[1] == 0  # the AH rule: no relevance through the attention probabilities
    assert rel[2] > 0 and rel[3] > 0 and rel[4] > 0 and float(rel.sum()) == pytest.approx(1.0)


# --- end to end on the small model: the decoder's layers allocated, the rest W4A4 ---------------------

@pytest.fixture(scope="module")
def mixed(tiny_model, tmp_path_factory):
    from ptq4ris_core.calib.calibrate import CalibrationSet, calibrate
    from ptq4ris_core.methods import get_method
    study = tmp_path_factory.mktemp("study") / "study.json"
    opts = dict(w_cands="2/4/8", a_cands="4/8", study_pairs=2, study=str(study), mix_parts="decoder")
    q, report = calibrate(tiny_model, get_method("mixq-kl", **opts), 4, 4, CalibrationSet(n=2), progress=False)
    return q, report, opts, study


def test_mixq_meets_the_w4a4_budget_and_its_bits_reach_the_quantizers(mixed):
    q, report, _, study = mixed
    mp = report["mixed_precision"]
    assert mp["optimal"] and mp["size_vs_uniform"] <= 1 + 1e-9 and mp["bops_vs_uniform"] <= 1 + 1e-9
    assert mp["solve_seconds"] < 10 and not mp["study_cached"]
    st = json.loads(study.read_text())
    assert {l["domain"] for l in st["layers"]} == {"decoder"} and set(st["seconds"]) >= {"kl_importance", "sensitivity"}
    for name, (w, a) in mp["bits"].items():
        mod = q.get_submodule(name)
        if w is not None:
            assert mod.weight_quantizer.bits == w
        if a is not None:
            assert mod.input_quantizer.bits == a
    # the size budget, counted independently on the model: Σ weight bits · weights of the allocated layers
    allocated = [q.get_submodule(n) for n, (w, _) in mp["bits"].items() if w is not None]
    assert sum(m.weight_quantizer.bits * m.weight.numel() for m in allocated) <= 4 * sum(m.weight.numel() for m in allocated)
    others = [m for n, m in q.named_modules() if n.startswith("stages.") and getattr(m, "weight_quantizer", None)]
    assert others and all(m.input_quantizer is None or m.input_quantizer.bits == 4 for m in others)
    assert others and all(m.weight_quantizer.bits == 4 for m in others)


def test_a_second_run_reads_the_study_and_a_study_of_another_model_is_refused(mixed, tiny_model):
    import copy

    from ptq4ris_core.methods import get_method
    _, _, opts, _ = mixed
    plan = get_method("mixq-kl", **opts).plan_bits(tiny_model, 4, 4, progress=False)
    assert plan["report"]["study_cached"]
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        other.decoder.classifier.weight.mul_(2)
    with pytest.raises(ConfigError, match="measured on another model"):
        get_method("mixq-kl", **opts).plan_bits(other, 4, 4, progress=False)


def test_size_budgets_above_fp32_or_below_the_smallest_are_refused_by_name(mixed, tiny_model):
    from ptq4ris_core.methods import get_method
    _, report, opts, _ = mixed
    fp32 = report["mixed_precision"]["fp32_mb"]
    with pytest.raises(ConfigError, match="not below the FP32 model"):
        get_method("mixq-kl", size_mb=fp32 * 1.01, **opts).plan_bits(tiny_model, 4, 4, progress=False)
    with pytest.raises(ConfigError, match="smallest feasible size_mb is") as e:
        get_method("mixq-kl", size_mb=0.01, **opts).plan_bits(tiny_model, 4, 4, progress=False)
    least = float(str(e.value).split("smallest feasible size_mb is ")[1].split()[0])
    plan = get_method("mixq-kl", size_mb=least + 1e-3, **opts).plan_bits(tiny_model, 4, 4, progress=False)
    assert plan["report"]["model_mb"] <= least + 1e-3


@pytest.fixture(scope="module")
def mixed_engines(mixed, tmp_path_factory):
    """The mixed model exported for every CPU (portable, the default) and with full 8-bit weights (vnni)."""
    from ptq4ris_core.calib.calibrate import CalibrationSet
    from ptq4ris_core.engine import export_engine
    from ptq4ris_core.models import Preprocessor
    q = mixed[0]
    batches = CalibrationSet(n=2).build(q.cfg, Preprocessor(q.cfg))
    root = tmp_path_factory.mktemp("mixed_engines")
    return {t: export_engine(q, root / t, {"quantization": {"method": "mixq-kl", "bits": "W4A4"}}, batches, target=t)
            for t in ("portable", "vnni")}


def test_the_mixed_engine_runs_its_bits_and_passes_its_self_check(mixed, mixed_engines):
    from ptq4ris_core.engine import Engine
    _, report, _, _ = mixed
    out = mixed_engines["portable"]
    meta = json.loads((out / "meta.json").read_text())
    stored = meta["quantization"]["weights"]
    for name, (w, a) in report["mixed_precision"]["bits"].items():
        if name in stored:
            assert stored[name]["weight_bits"] == min(w, 7) and stored[name]["input_bits"] == a
    # int2/int4 (packed) and int7/int8 weights side by side, 4- and 8-bit inputs side by side
    assert len({s["weight_bits"] for s in stored.values()}) >= 2 and len({s["input_bits"] for s in stored.values()}) >= 2
    eng = Engine.load(out)  # the self-check compares the integer graphs with their deploy simulation
    assert eng.self_check["passed"]


def test_the_mixed_engine_is_right_on_cpus_without_vnni(mixed_engines):
    """Its int8 weight codes obey the int16 pair bound in every kernel order (full 8-bit ones would not), and
    under OpenVINO kernels capped to AVX2 (a CPU without VNNI's pair sums) it passes its self-check."""
    from int16_pairs import cap_took_effect, saturating_pairs, self_checks_under_avx2_cap, weight_codes
    assert weight_codes(mixed_engines["portable"] / "segmenter.onnx")  # the decoder's 8-bit layers, as int7
    for graph in ("segmenter.onnx", "text_encoder.onnx"):
        assert saturating_pairs(mixed_engines["portable"] / graph) == 0, graph
    assert sum(saturating_pairs(mixed_engines["vnni"] / g) for g in ("segmenter.onnx", "text_encoder.onnx")) > 0
    from ptq4ris_core.engine.cpu import cpu_int8
    if importlib.util.find_spec("openvino") is None or not cpu_int8().is_x86:
        pytest.skip(f"the AVX2 cap needs OpenVINO on an x86 CPU: {cpu_int8().describe()}")
    res = self_checks_under_avx2_cap(mixed_engines["portable"])[str(mixed_engines["portable"])]
    if not cap_took_effect(res["kernels"]):
        pytest.skip(f"this OpenVINO build ignored the AVX2 cap ({res['kernels']}): no saturating kernels ran")
    assert res["passed"], res


def test_the_picture_draws_bits_per_layer_over_importance(mixed, tmp_path):
    from ptq4ris_core.experiments.mixed_bits import picture
    _, report, _, study = mixed
    png = picture({("mixq-kl", 4): report["mixed_precision"]}, json.loads(study.read_text()), tmp_path / "bits.png")
    import matplotlib.image
    assert matplotlib.image.imread(png).shape[0] > 200


def test_a_saved_mixed_model_loads_with_its_bits(mixed, tiny_model, tmp_path):
    from ptq4ris_core.calib.saved import example_batch, load_quantized, save_quantized
    from ptq4ris_core.models.store import save_model
    q, report, _, _ = mixed
    base = str(save_model(tiny_model, tmp_path / "tiny.safetensors", dtype=torch.float32))
    again, meta = load_quantized(save_quantized(q, report, tmp_path / "saved", base=base))
    assert meta["mixed_precision"]["bits"] == report["mixed_precision"]["bits"]
    for name, (w, a) in report["mixed_precision"]["bits"].items():
        if w is not None:
            assert again.get_submodule(name).weight_quantizer.bits == w
    batch = example_batch(tiny_model.cfg)
    with torch.no_grad():
        assert torch.equal(again(*batch), q(*batch))


def test_an_interrupted_study_resumes_from_its_finished_layers(tiny_model, tmp_path, monkeypatch):
    from ptq4ris_core.methods import get_method
    from ptq4ris_core.mixed import sensitivity as S
    from ptq4ris_core.mixed.study import StudySettings, layer_study
    calls, real = [], S.requantized

    def counting(*a, **k):
        calls.append(a[0].name)
        if limit[0] is not None and len(calls) > limit[0]:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(S, "requantized", counting)
    settings = StudySettings((4, 8), (4, 8), pairs=2, parts=("decoder",))
    path = tmp_path / "study.json"
    limit = [5]  # each decoder conv has two settings (weights at 4, inputs at 4): two layers and a half
    with pytest.raises(KeyboardInterrupt):
        layer_study(tiny_model, get_method("ptq4ris"), settings, path, progress=False)
    partial = json.loads(path.with_suffix(".partial.json").read_text())["sensitivity"]
    finished = [n for n, v in partial.items() if "4" in v["w"]]
    assert len(finished) == 2 and not path.exists()
    calls.clear()
    limit[0] = None
    study = layer_study(tiny_model, get_method("ptq4ris"), settings, path, progress=False)
    assert len(calls) == 2 * (len(study["layers"]) - 2) and not set(calls) & set(finished)
    assert study["seconds"]["sensitivity_layers_resumed"] == 2 and not path.with_suffix(".partial.json").exists()
    got = {l["name"]: s for l, s in zip(study["layers"], study["sensitivity"])}
    assert all(got[n]["w"]["4"] == partial[n]["w"]["4"] for n in finished)
