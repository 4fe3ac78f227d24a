"""Training: resumes where it stopped, starts from given weights, and fine-tunes the text encoder
only when asked (a tiny model, a few steps)."""
import json

import pytest

import torch

from ptq4ris_core.models import RISConfig, load_model
from ptq4ris_core.models.text_encoder import TextEncoder
from ptq4ris_core.train import train

TINY = RISConfig(image_size=64, embed_dim=16, depths=(1, 2, 1, 1), heads=(1, 2, 2, 4), window=4,
                 decoder_width=16, stem_width=8)
SMALL = dict(batch=2, warmup=1, val_every=2, val_n=4, workers=0)


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]


def test_training_resumes_from_its_checkpoint_and_logs_validation(tmp_path):
    run = tmp_path / "run"
    train(run, TINY, steps=2, **SMALL)
    first = load_model(run / "model.safetensors").state_dict()
    assert [e["step"] for e in _log(run) if "val_mIoU" in e] == [2]
    train(run, TINY, steps=4, **SMALL)  # same folder: picks up at step 2, not from scratch
    vals = [e for e in _log(run) if "val_mIoU" in e]
    assert [e["step"] for e in vals] == [2, 4] and 0 <= vals[-1]["val_mIoU"] <= 1
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 4
    second = load_model(run / "model.safetensors").state_dict()
    assert any(not torch.equal(first[k], second[k]) for k in first if k.startswith("stages."))
    # Frozen text encoder: neither trained nor stored
    assert not any(k.startswith("text_encoder.") for k in torch.load(run / "checkpoint.pt", weights_only=True)["model"])


def test_init_and_text_fine_tuning(tmp_path):
    base = tmp_path / "base"
    train(base, TINY, steps=2, **SMALL)
    init = base / "model.safetensors"
    # lr 0 for the vision side, a real one for the text side: the vision weights stay the init's exactly,
    # the text encoder moves away from the pretrained MiniLM, and both are stored.
    tuned = tmp_path / "tuned"
    train(tuned, TINY, steps=2, lr=0.0, text_lr=1e-3, init=str(init), **SMALL)
    start, after = load_model(init).state_dict(), load_model(tuned / "model.safetensors")
    assert not after.cfg.freeze_text and json.loads((tuned / "model.json").read_text(encoding="utf-8"))["text_lr"] == 1e-3
    state = after.state_dict()
    for k, _ in after.named_parameters():  # parameters (BatchNorm statistics move in train mode)
        if not k.startswith("text_encoder."):
            assert torch.allclose(state[k], start[k], atol=1e-3), k  # fp16 storage of the same values
    pretrained = TextEncoder.pretrained().state_dict()
    moved = [k for k in pretrained if k.startswith("encoder.") and
             not torch.allclose(state["text_encoder." + k], pretrained[k], atol=1e-3)]
    assert moved
    # Resuming a fine-tuning run keeps the text encoder's own group and learning rate
    train(tuned, TINY, steps=3, lr=0.0, text_lr=1e-3, init=str(init), **SMALL)
    ck = torch.load(tuned / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 3 and [g["peak"] for g in ck["opt"]["param_groups"]] == [0.0, 1e-3]
    assert any(k.startswith("text_encoder.") for k in ck["model"])


def test_data_offset_continues_on_unseen_scenes_and_resumes_there(tmp_path, monkeypatch):
    import pytest

    import ptq4ris_core.train as train_module
    from ptq4ris_core.data import SPLIT_SIZES
    from ptq4ris_core.errors import InputError
    seen = []

    class Recording(train_module.SceneDataset):
        def __init__(self, split, length, size=128, seed=0, offset=0, variety=0.0):
            seen.append((split, offset, length, variety))
            super().__init__(split, length, size, seed, offset, variety)
    monkeypatch.setattr(train_module, "SceneDataset", Recording)
    run = tmp_path / "run"
    train(run, TINY, steps=2, data_offset=1000, **SMALL)
    train(run, TINY, steps=4, data_offset=1000, **SMALL)  # resumed at step 2: scenes 1004.., not 1000..
    assert [s for s in seen if s[0] == "train"] == [("train", 1000, 4, 0.75), ("train", 1004, 4, 0.75)]
    assert json.loads((run / "model.json").read_text(encoding="utf-8"))["data_offset"] == 1000
    with pytest.raises(InputError, match="--data-offset"):
        train(tmp_path / "past_the_end", TINY, steps=2, data_offset=SPLIT_SIZES["train"] - 3, **SMALL)


def test_a_time_budget_stops_the_run_validated_and_saved_and_the_schedule_follows_time(tmp_path, monkeypatch):
    from ptq4ris_core import train as train_module
    from ptq4ris_core.train import lr_at
    # a clock that moves 10 s per read: a 1-minute budget is spent after a handful of steps, long before 1000
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(train_module.time, "time", lambda: float(next(clock)))
    run = tmp_path / "timed"
    train(run, TINY, steps=1000, minutes=1.0, device="cpu", **{**SMALL, "val_every": 1000})
    log = _log(run)
    vals = [e for e in log if "val_mIoU" in e]
    assert len(vals) == 1 and 0 < vals[0]["step"] < 20  # validated once, where the time ran out
    meta = json.loads((run / "model.json").read_text(encoding="utf-8"))
    assert meta["minutes"] == 1.0 and meta["device"] == "cpu" and meta["step"] == vals[0]["step"]
    # the cosine over time: the peak just after warm-up, half-way at half the budget, 1 % at its end
    assert lr_at(10, 1000, 1.0, 1, done=0.0) == 1.0
    assert abs(lr_at(10, 1000, 1.0, 1, done=0.5) - (0.01 + 0.99 * 0.5)) < 1e-12
    assert abs(lr_at(10, 1000, 1.0, 1, done=1.3) - 0.01) < 1e-12
    from ptq4ris_core.errors import InputError
    with pytest.raises(InputError, match="--minutes"):
        train(tmp_path / "no_time", TINY, steps=2, minutes=0, **SMALL)


def test_init_at_another_input_size_keeps_every_weight_but_the_position_biases(tmp_path):
    from ptq4ris_core.models.resize import resized_config
    base = tmp_path / "base"
    train(base, TINY, steps=1, **SMALL)
    init = base / "model.safetensors"
    bigger = resized_config(TINY, 96)  # maps of 24, 12, 6 and 3 tokens: a window of 3
    run = tmp_path / "at96"
    train(run, bigger, steps=1, lr=0.0, init=str(init), **SMALL)
    start, after = load_model(init).state_dict(), load_model(run / "model.safetensors")
    assert (after.cfg.image_size, after.cfg.window) == (96, 3)
    state = after.state_dict()
    for k, _ in after.named_parameters():
        if k.endswith("relative_position_bias_table"):
            assert state[k].shape[0] == 25  # (2 * 3 - 1) ** 2 offsets
        elif not k.startswith("text_encoder."):
            assert torch.allclose(state[k], start[k], atol=1e-3), k
