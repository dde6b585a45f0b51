"""Dense matching metrics and model selection of nclr_core.engine.evaluation: ground-truth
matches give error 0 and bias 0; a constant-shift oracle gives exactly that shift as bias."""
import math

import numpy as np
import pytest
import torch

from nclr_core.engine.evaluation import (
    DenseMatchStats,
    PretextAccumulator,
    dense_match_errors,
    selection_score,
)
from nclr_core.models.calibration_net import CalibrationNet
from nclr_core.models.feature_grid import cell_centers

H_CELLS, W_CELLS, STRIDE = 4, 6, 4
TINY = {"image_depth": 18, "fpn_channels": 16, "point_base_channels": 8, "voxel_size": 0.5,
        "channels": H_CELLS * W_CELLS, "fusion_d_model": 32, "fusion_heads": 2,
        "fusion_layers": 1, "fusion_keypoints": 32, "similarity": "cosine",
        "matching": "hard"}


def test_dense_stats_of_exact_matches_are_perfect():
    stats = DenseMatchStats()
    stats.add(np.zeros((50, 2)))
    stats.add(np.zeros((7, 2)))
    summary = stats.summary()
    assert summary["dense_match_points"] == 57
    for t in (1, 3, 5):
        assert summary[f"dense_match_acc_{t}px"] == 1.0
    assert summary["dense_match_err_px_median"] == 0.0
    assert summary["dense_match_bias_px"] == [0.0, 0.0]


def test_dense_stats_thresholds_median_and_bias():
    errors = np.array([[0.5, 0.0], [0.0, 2.0], [3.0, 4.0], [-30.0, 90.0]])
    summary = DenseMatchStats([errors]).summary()
    assert summary["dense_match_acc_1px"] == 0.25
    assert summary["dense_match_acc_3px"] == 0.5
    assert summary["dense_match_acc_5px"] == 0.5  # 5.0 px is not within 5 px
    assert summary["dense_match_err_px_median"] == pytest.approx(3.5)
    # the bias is over the matches within 5 px: the 95-px outlier does not swamp it
    assert summary["dense_match_bias_px"] == pytest.approx([0.25, 1.0])
    empty = DenseMatchStats().summary()
    assert empty["dense_match_points"] == 0 and math.isnan(empty["dense_match_acc_5px"])


def _oracle(shift: tuple[float, float]) -> tuple[CalibrationNet, dict, dict]:
    """A real CalibrationNet (cosine, hard matching) fed oracle features: each overlap
    point's feature is the one-hot code of the cell holding its true projection, and each
    cell's feature is its own code. The true projections are the cell centres plus `shift`,
    so the network matches every point to a cell centre exactly `shift` away."""
    gen = torch.Generator().manual_seed(0)
    n, m = 300, H_CELLS * W_CELLS
    cell = torch.randint(0, m, (n,), generator=gen)
    overlap = torch.rand(n, generator=gen) < 0.7
    centres = cell_centers(H_CELLS, W_CELLS, STRIDE, dtype=torch.float64)
    truth = centres[cell] + torch.tensor(shift, dtype=torch.float64)
    point_feats = torch.nn.functional.one_hot(cell, m).float()
    image_feats = torch.eye(m).reshape(m, H_CELLS, W_CELLS)[None].expand(2, -1, -1, -1)
    outputs = {"point_feats": point_feats.repeat(2, 1), "image_feats": image_feats,
               "image_scores": torch.ones(2, H_CELLS, W_CELLS)}
    batch = {"offset": torch.tensor([n, 2 * n]), "point_overlap": overlap.repeat(2),
             "point_pixel": torch.where(overlap[:, None], truth, 0.0).repeat(2, 1)}
    return CalibrationNet(**TINY).eval(), outputs, batch


def test_ground_truth_matches_give_dense_error_and_bias_zero():
    model, outputs, batch = _oracle((0.0, 0.0))
    errors = dense_match_errors(model, outputs, batch)
    assert [len(e) for e in errors] == [int(batch["point_overlap"][:300].sum())] * 2
    stats = DenseMatchStats(errors).summary()
    assert stats["dense_match_acc_1px"] == 1.0 and stats["dense_match_err_px_median"] == 0.0
    assert stats["dense_match_bias_px"] == [0.0, 0.0]


@pytest.mark.parametrize("shift", [(0.75, -1.5), (-2.0, 0.25)])
def test_constant_shift_oracle_shows_exactly_that_shift_as_bias(shift):
    model, outputs, batch = _oracle(shift)
    accumulator = PretextAccumulator()
    accumulator.add_dense(dense_match_errors(model, outputs, batch))
    dense = accumulator.dense.summary()
    # the matches sit `shift` away from the truth: matched − true = −shift
    assert dense["dense_match_bias_px"] == pytest.approx([-shift[0], -shift[1]], abs=1e-9)
    assert dense["dense_match_err_px_median"] == pytest.approx(math.hypot(*shift))
    assert dense["dense_match_acc_5px"] == 1.0 and dense["dense_match_acc_1px"] == 0.0


def test_selection_score_counts_ransac_success_and_dense_accuracy():
    summary = {"success_rate": 0.5, "dense_match_acc_1px": 0.2, "dense_match_acc_5px": 0.8,
               "match_acc_5px": 1.0}
    assert selection_score(summary) == pytest.approx(1.0)
