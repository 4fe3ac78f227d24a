"""Saving and loading weights: round trip, and clear errors for missing or wrong files."""
import json

import pytest
import torch

from ptq4ris_core.errors import ModelLoadError
from ptq4ris_core.models import load_model, save_model


def test_round_trip_reproduces_outputs(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.safetensors", {"note": "test"}, dtype=torch.float32)
    loaded = load_model(path)
    x = torch.randn(1, 3, 64, 64)
    ids = torch.tensor([[101, 2417, 4418, 102]])
    m = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.allclose(tiny_model(x, ids, m), loaded(x, ids, m), atol=1e-5)
    assert json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["note"] == "test"
    # The frozen text encoder is not duplicated into the file.
    from safetensors import safe_open
    assert not any(k.startswith("text_encoder.") for k in safe_open(str(path), "pt").keys())


def test_missing_corrupt_or_mismatched_weights_are_named(tiny_model, tmp_path):
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(tmp_path / "absent.safetensors")
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelLoadError, match="sidecar"):
        load_model(path)
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        load_model(path)
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    meta["config"]["embed_dim"] = 24  # claims another model
    path.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="does not match its config|has shape"):
        load_model(path)


def test_fp16_storage_keeps_large_batchnorm_statistics(tiny_model, tmp_path):
    """BN running variances beyond fp16's range (1e6 seen in training) must survive the fp16 file."""
    import copy
    m = copy.deepcopy(tiny_model)
    bn = next(x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d))
    bn.running_var.fill_(4.0e6)
    bn.running_mean.fill_(1025.17)
    loaded = load_model(save_model(m, tmp_path / "m.safetensors"))
    bn2 = next(x for x in loaded.modules() if isinstance(x, torch.nn.BatchNorm2d))
    assert torch.equal(bn2.running_var, bn.running_var) and torch.equal(bn2.running_mean, bn.running_mean)
