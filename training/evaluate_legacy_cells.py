"""evaluate_calibration.py for a checkpoint trained before the cell-convention fix.

    python training/evaluate_legacy_cells.py --checkpoint OLD.pt --data D --split 00 --out O ...

Models trained before issue 12 (the shipped `models/nclr_synthetic.pt` up to main 8edd5f7)
learned with cell j of a stride-s map at pixel s*j + (s-1)/2 and an FPN that upsampled with
`F.interpolate(align_corners=False)`. Today's code puts cell j at s*j and keeps the FPN on
that grid (`nclr_core.models.feature_grid`); evaluated with it, such a model is off by
several pixels. This script runs `training/evaluate_calibration.py` (same arguments, same
outputs) with the old convention patched in, so that old and new models are compared each
with the code it was trained with; `metrics.json` records this script's command line.
"""
from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import nclr_core.data.pairs as pairs
import nclr_core.engine.calibration_eval as calibration_eval
import nclr_core.inference as inference
import nclr_core.models.calibration_net as calibration_net
import nclr_core.models.fusion as fusion
import nclr_core.models.image_encoder as image_encoder
from nclr_core.engine.metrics_file import write_metrics_json
from nclr_core.models.feature_grid import cell_centers, pixel_to_cell

REPO = Path(__file__).resolve().parents[1]


def legacy_cell_centers(h: int, w: int, stride: int, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """(h*w, 2) cell centres at (s*j + (s-1)/2, s*i + (s-1)/2), the old convention."""
    return cell_centers(h, w, stride, dtype=dtype, device=device) + (stride - 1) / 2.0


def legacy_pixel_to_cell(uv, stride: int):
    """Inverse of `legacy_cell_centers`."""
    return pixel_to_cell(uv - (stride - 1) / 2.0, stride)


def legacy_upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The old FPN upsampling."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    calibration_net.cell_centers = fusion.cell_centers = legacy_cell_centers
    calibration_eval.cell_centers = legacy_cell_centers
    pairs.pixel_to_cell = calibration_eval.pixel_to_cell = legacy_pixel_to_cell
    inference.pixel_to_cell = legacy_pixel_to_cell
    image_encoder.upsample_to_stride = legacy_upsample
    spec = importlib.util.spec_from_file_location(
        "evaluate_calibration", REPO / "training" / "evaluate_calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(argv)
    out = Path(module.parse_args(argv).out) / "metrics.json"
    if code == 0:
        metrics = json.loads(out.read_text())
        metrics["command"] = shlex.join(["python", "training/evaluate_legacy_cells.py", *argv])
        write_metrics_json(out, metrics)
    return code


if __name__ == "__main__":
    sys.exit(main())
