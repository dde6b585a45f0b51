"""Shared fixtures: paths to the real data samples beside the repository, the tiny calibration
checkpoint, the hypothesis profile of the fuzz tests, and one thread for all."""
import os
from collections.abc import Callable
from pathlib import Path

# One thread for every test and the processes they start: multi-threaded CPU reductions are
# not bit-reproducible (tests compare forwards exactly) and spconv runs 20-100x slower with
# threads on a shared CPU. Set before torch is imported.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

torch.set_num_threads(1)

# Property-based tests: the same examples on every run (derandomized, no example database),
# no per-example deadline on a shared machine. HYPOTHESIS_PROFILE=explore draws new random
# examples each run (with NCLR_FUZZ_SCALE=20 for 20 times as many).
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """`../shared/data/real`, or skip when this checkout has no real samples beside it."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data samples not found at {REAL_DATA}")
    return REAL_DATA


# A tiny untrained CalibrationNet, as the nodes, bag tools and demo load it.
TINY_CALIBRATION_MODEL = {
    "image_depth": 18, "fpn_channels": 16, "point_base_channels": 8, "voxel_size": 0.5,
    "point_range": [-40.0, -40.0, -3.0, 40.0, 40.0, 3.0], "channels": 16,
    "fusion_d_model": 32, "fusion_heads": 2, "fusion_layers": 1, "fusion_keypoints": 32,
    "max_match_points": 64, "min_match_points": 8, "min_match_cells": 16,
}
TINY_CALIBRATION_DATA = {"image_height": 64, "image_width": 96, "max_points": 2000,
                         "point_range": TINY_CALIBRATION_MODEL["point_range"]}


@pytest.fixture(scope="session")
def save_tiny_calibration_checkpoint() -> Callable[[Path], Path]:
    """A function writing the tiny calibration checkpoint (weights seeded with 0) to a path."""
    def save(path: Path) -> Path:
        import torch

        from nclr_core.checkpoint import save_checkpoint
        from nclr_core.models.calibration_net import CalibrationNet

        torch.manual_seed(0)
        net = CalibrationNet(**TINY_CALIBRATION_MODEL)
        save_checkpoint(path, model=net.state_dict(),
                        config={"model": TINY_CALIBRATION_MODEL, "data": TINY_CALIBRATION_DATA})
        return path
    return save
