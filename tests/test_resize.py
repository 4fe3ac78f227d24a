"""Carrying a model to another input size: the window that tiles the new token maps, and the relative
position bias read at the same distance in the scene."""
from dataclasses import replace

import pytest
import torch

from ptq4ris_core.errors import InputError
from ptq4ris_core.models import Preprocessor, RISModel
from ptq4ris_core.models.resize import carry_weights, rescale_bias_table, resized_config, window_for


def test_window_tiles_every_stage_or_the_size_is_refused():
    assert [window_for(s, 4) for s in (128, 192, 256)] == [8, 6, 8]  # 192: maps of 48, 24, 12, 6 tokens
    with pytest.raises(InputError, match="multiple of 32"):
        window_for(100, 4)


def test_a_window_that_does_not_tile_the_maps_is_refused_when_built(tiny_model):
    with pytest.raises(ValueError, match="does not tile"):
        RISModel(replace(tiny_model.cfg, image_size=96, window=8), tiny_model.text_encoder)


def test_bias_table_is_read_at_the_same_scene_distance():
    old_w, heads = 4, 3
    old = torch.randn((2 * old_w - 1) ** 2, heads)
    new = rescale_bias_table(old, 8, 0.5)  # input twice as large: offset d reads old offset d/2
    old_grid, new_grid = old.T.reshape(heads, 7, 7), new.T.reshape(heads, 15, 15)
    for dy in range(-6, 7, 2):
        for dx in range(-6, 7, 2):
            assert torch.allclose(new_grid[:, dy + 7, dx + 7], old_grid[:, dy // 2 + 3, dx // 2 + 3], atol=1e-5)
    assert torch.allclose(new_grid[:, 0, 0], old_grid[:, 0, 0], atol=1e-5)  # past the old table: its border
    assert torch.allclose(rescale_bias_table(old, old_w, 1.0), old, atol=1e-5)


def test_carried_model_equals_the_original_at_its_own_size_and_runs_at_another(tiny_model):
    pre = Preprocessor(tiny_model.cfg)
    ids, mask = pre.texts(["the red circle"])
    same = RISModel(tiny_model.cfg, tiny_model.text_encoder).eval()
    same.load_state_dict(carry_weights(tiny_model, same))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(same(x, ids, mask), tiny_model(x, ids, mask))
    cfg = resized_config(tiny_model.cfg, 96)  # 24, 12, 6, 3 tokens a side: a window of 3
    assert cfg.window == 3
    big = RISModel(cfg, tiny_model.text_encoder).eval()
    big.load_state_dict(carry_weights(tiny_model, big))
    with torch.no_grad():
        out = big(torch.randn(1, 3, 96, 96), ids, mask)
    assert out.shape == (1, 2, 96, 96) and torch.isfinite(out).all()
    assert torch.equal(big.patch_embed.proj.weight, tiny_model.patch_embed.proj.weight)
