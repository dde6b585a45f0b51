"""Optimizer groups of the pre-training loop: fresh modules at lr, loaded ones scaled."""
import pytest

from nclr_core.engine.trainer import parameter_groups
from nclr_core.models.calibration_net import CalibrationNet

TINY = {"image_depth": 18, "image_base_channels": 8, "fpn_channels": 8,
        "point_base_channels": 8, "channels": 8, "fusion_d_model": 16, "fusion_heads": 2,
        "fusion_keypoints": 16, "fine_matching": True, "fine_channels": 8}


def test_fresh_modules_learn_at_lr_and_loaded_ones_at_the_scaled_lr():
    model = CalibrationNet(**TINY)
    groups = parameter_groups(model, 1e-3, 1e-2, ("fine_matcher",), 0.1)
    fine = {id(p) for p in model.fine_matcher.parameters()}
    alignment = {id(p) for p in model.alignment.parameters()}
    fresh_ids = {id(p) for g in groups if g["lr"] == 1e-2 for p in g["params"]}
    loaded_ids = {id(p) for g in groups if g["lr"] == pytest.approx(1e-3) for p in g["params"]}
    assert fresh_ids == fine
    assert loaded_ids == {id(p) for p in model.parameters()} - fine
    assert all(g["weight_decay"] == 0.0 for g in groups if alignment & {id(p) for p in
                                                                         g["params"]})
    # without init weights: one lr, the LTA without weight decay (two groups, as before)
    plain = parameter_groups(model, 1e-3, 1e-2)
    assert [g["lr"] for g in plain] == [1e-2, 1e-2] and plain[1]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="pretrained_lr_scale"):
        parameter_groups(model, 1e-3, 1e-2, (), 0.0)
