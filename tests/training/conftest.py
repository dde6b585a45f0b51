"""A tiny synthetic data set (2 sequences × 3 frames, 16 beams, 320×96), made once."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    subprocess.run(
        [sys.executable, str(REPO / "training" / "make_synthetic.py"), "--out", str(root),
         "--sequences", "2", "--frames", "3", "--seed", "5", "--beams", "16",
         "--width", "320", "--height", "96"],
        check=True, capture_output=True, text=True)
    return root
