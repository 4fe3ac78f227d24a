"""The RIS metrics against hand-worked cases."""
import numpy as np
import pytest

from ptq4ris_core.metrics import RISScores, format_summary, iou


def m(rows):
    return np.array(rows, bool)


def test_iou_hand_worked():
    p = m([[1, 1, 0], [0, 0, 0]])
    g = m([[0, 1, 1], [0, 0, 0]])
    assert iou(p, g) == (1 / 3, 1, 3)
    assert iou(p, p) == (1.0, 2, 2)
    assert iou(p, ~p) == (0.0, 0, 6)


def test_empty_union_counts_one_only_when_both_empty():
    z = np.zeros((2, 2), bool)
    assert iou(z, z)[0] == 1.0
    one = z.copy()
    one[0, 0] = True
    assert iou(z, one)[0] == 0.0 and iou(one, z)[0] == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        iou(np.zeros((2, 2), bool), np.zeros((3, 2), bool))


def test_miou_oiou_prec_hand_worked():
    s = RISScores()
    # Sample A: inter 1, union 4 → IoU 0.25. Sample B: inter 6, union 8 → 0.75. Sample C: inter 9, union 10 → 0.9.
    a_p, a_g = np.zeros(10, bool), np.zeros(10, bool)
    a_p[:2], a_g[1:4] = True, True
    b_p, b_g = np.zeros(10, bool), np.zeros(10, bool)
    b_p[:8], b_g[2:8] = True, True
    c_p, c_g = np.zeros(10, bool), np.zeros(10, bool)
    c_p[:9], c_g[:] = True, True
    assert s.add(a_p, a_g, "attribute") == 0.25
    assert s.add(b_p, b_g, "relation") == 0.75
    assert s.add(c_p, c_g, "relation") == 0.9
    out = s.summary()
    assert out["n"] == 3
    assert out["mIoU"] == pytest.approx((0.25 + 0.75 + 0.9) / 3)
    assert out["oIoU"] == pytest.approx((1 + 6 + 9) / (4 + 8 + 10))
    assert out["prec@0.5"] == pytest.approx(2 / 3)
    assert out["prec@0.7"] == pytest.approx(2 / 3)
    assert out["prec@0.8"] == pytest.approx(1 / 3)
    assert out["prec@0.9"] == 0.0  # strictly greater than 0.9
    assert out["by_kind"]["relation"]["mIoU"] == pytest.approx(0.825)
    assert out["by_kind"]["attribute"]["oIoU"] == pytest.approx(0.25)
    table = format_summary(out)
    assert "| relation | 2 | 82.50 |" in table
