"""The benchmark harness: `benchmarks/run.py --quick` end to end, and its timing helpers."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.report import not_worse  # noqa: E402
from benchmarks.run import SECTIONS  # noqa: E402
from benchmarks.timing import PeakMemory, measure, median_of  # noqa: E402

# a hang guard, not a speed check: the quick run's duration is in its JSON, not asserted
QUICK_TIMEOUT_S = 600


def test_measure_excludes_warmup_and_takes_the_median() -> None:
    calls = []
    pauses = iter([0.0, 0.03, 0.001, 0.002])

    def fn() -> None:
        calls.append(1)
        time.sleep(next(pauses))

    timing = measure(fn, repeats=3, warmup=1)
    assert len(calls) == 4 and len(timing.times_s) == 3
    assert 0.002 <= timing.median_s < 0.03 <= max(timing.times_s)
    assert median_of([{"a": 1.0}, {"a": 5.0}, {"a": 2.0}]) == {"a": 2.0}
    with pytest.raises(ValueError, match="repeats"):
        measure(fn, repeats=0)


def test_peak_memory_sees_a_temporary_allocation() -> None:
    size_mib = 64
    with PeakMemory() as memory:
        block = np.ones(size_mib * 2**20 // 8)
        del block
    result = memory.result()
    if result["peak_rss_scope"] != "block":
        pytest.skip("the kernel does not allow resetting the peak RSS here")
    assert result["peak_rss_increase_mib"] >= 0.9 * size_mib
    with PeakMemory() as quiet:
        pass
    assert quiet.result()["peak_rss_increase_mib"] < size_mib / 2


def test_not_worse_allows_rounding_only() -> None:
    ref = {"rotation_error_deg_median": 0.1, "translation_error_m_median": 0.01}
    assert not_worse({"rotation_error_deg_median": 0.10001,
                      "translation_error_m_median": 0.009}, ref)
    assert not not_worse({"rotation_error_deg_median": 0.11,
                          "translation_error_m_median": 0.009}, ref)


@pytest.mark.slow
def test_quick_run_writes_every_section(tmp_path: Path) -> None:
    # one intra-op thread: the smoke run's time then does not hinge on what else holds the
    # cores (spconv's CPU path slows down by orders of magnitude with contended threads)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"),
                          timeout=QUICK_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "benchmarks.json").read_text())
    assert result["quick"] is True and result["machine"]["cpu"]
    sections = result["sections"]
    assert set(sections) == set(SECTIONS)
    for name, section in sections.items():
        assert "error" not in section, (name, section)

    if not torch.cuda.is_available():
        assert sections["inference"]["gpu"] == {"skipped": "no CUDA device"}
        assert sections["training"]["gpu"] == {"skipped": "no CUDA device"}
    cpu_case = sections["inference"]["cpu"]["cpu_config"]
    stages = cpu_case["stages_median_s"]
    assert stages["total_s"] > 0 and cpu_case["frames_per_s"] == pytest.approx(
        1 / stages["total_s"])
    assert sum(v for k, v in stages.items() if k != "total_s") == pytest.approx(
        stages["total_s"], rel=0.05)
    training = sections["training"]["cpu"]["cpu_config"]
    assert training["step_s"]["median_s"] > 0
    assert training["losses"] == ["feature", "overlap"]  # synthetic_cpu.yaml: no L_p, no fine
    assert sections["spconv"]["voxels"] > 0 and sections["spconv"]["by_threads"]
    assert sections["data"]["readers"]["semantickitti_synthetic"]["raw_frames_per_s"] > 0
    assert sections["data"]["synthetic_generation"]["frames_per_s_generate_median"] > 0
    node = sections["node"]
    if "skipped" in node:
        assert node["skipped"].startswith("node not available")
    else:
        run = node["runs"]["global"]
        assert run["pairs_published"] > 0 and 0 < run["processed_share"] <= 1

    epnp = sections["epnp"]
    cells = {(r["n"], r["noise_px"]) for r in epnp["accuracy"]}
    assert cells == {(n, s) for n in (128, 1024, 4096) for s in (0.0, 1.0, 3.0)}
    for row in epnp["accuracy"]:  # acceptance: at least as accurate as EPnP + ITERATIVE
        assert not_worse(row["ours_epnp_gn"], row["opencv_epnp_iterative"]), row
    assert {r["outlier_ratio"] for r in epnp["ransac"]} == {0.3, 0.6}
    assert all(r["speed_ratio_ours_over_opencv_epnp"] > 0 for r in epnp["throughput"])

    refine = sections["refine"]
    assert refine["frames"] >= 2 and refine["wall_s"]["median_s"] > 0
    assert refine["cpu_s_median"] > 0 and refine["contour_points"] > 0

    tables = (tmp_path / "benchmarks.md").read_text()
    for title in ("EPnP vs OpenCV", "Calibration inference", "Node throughput",
                  "Training step", "Data loading", "Sparse convolution",
                  "Training-free refinement"):
        assert f"## {title}" in tables
