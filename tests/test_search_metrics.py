"""The scale search's scores against hand-worked values of their formulas (METHODS.md §1, docs/METHODS.md)."""
import math

import pytest
import torch

from ptq4ris_core.calib.metrics import get_metric

O = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
Oq = torch.tensor([[1.5, -2.0, 0.0], [0.0, 1.0, -1.0]])
# |O - Oq| = [[0.5, 0, 0.5], [0, 2, 0]]


def test_mse_is_the_mean_squared_error():
    assert get_metric("mse")(O, Oq).item() == pytest.approx((0.25 + 0.25 + 4.0) / 6)


def test_mse_p_reads_the_whole_power():
    # p = 2.4 (PD-Quant/QDrop): 2 * 0.5^2.4 + 2^2.4 over 6. The old parser read "mse2.4" as p = 0.4.
    want = (2 * 0.5 ** 2.4 + 2 ** 2.4) / 6
    assert get_metric("mse2.4")(O, Oq).item() == pytest.approx(want)
    assert get_metric("mse2.4")(O, Oq).item() != pytest.approx((2 * 0.5 ** 0.4 + 2 ** 0.4) / 6)
    assert get_metric("mse3")(O, Oq).item() == pytest.approx((2 * 0.125 + 8) / 6)


def test_mse_per_channel_reduces_over_the_given_axes():
    per_column = get_metric("mse")(O, Oq, dim=0)
    assert per_column.tolist() == pytest.approx([0.125, 2.0, 0.125])


def test_cosine_is_one_minus_row_cosine():
    a, b = O[0], Oq[0]
    row0 = 1 - float(a @ b) / (a.norm() * b.norm()).item()
    a, b = O[1], Oq[1]
    row1 = 1 - float(a @ b) / (a.norm() * b.norm()).item()
    assert get_metric("cosine")(O, Oq).item() == pytest.approx((row0 + row1) / 2, abs=1e-6)


def test_hessian_weights_the_squared_error_by_the_squared_gradient():
    g = torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.5, 1.0]])
    # g² (O - Oq)² = [[1, 0, 0], [0, 1, 0]]
    assert get_metric("hessian")(O, Oq, g).item() == pytest.approx(2 / 6)
    assert math.isclose(get_metric("hessian")(O, O, g).item(), 0.0)


@pytest.mark.parametrize("name", ["msex", "mse-1", "mse0", "l1", ""])
def test_unknown_or_bad_metric_names_say_what_is_accepted(name):
    with pytest.raises(ValueError, match="metric"):
        get_metric(name)
