"""Generate the synthetic driving data set in the SemanticKITTI layout.

    python training/make_synthetic.py --out data/synthetic --sequences 2 --frames 100 --seed 0

--randomise draws each sequence's camera (auto-exposure level, response, white balance,
noise, blur, vignetting, lens distortion), sun, materials and LiDAR (beams, dropout,
reflectance) from its seed and index (nclr_core.data.synthetic.randomise).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys

from nclr_core.data.synthetic.randomise import RandomiseConfig
from nclr_core.data.synthetic.sequence import SyntheticConfig
from nclr_core.data.synthetic.writer import write_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output root (gets sequences/NN/...)")
    p.add_argument("--sequences", type=int, default=1, help="number of sequences (00, 01, ...)")
    p.add_argument("--frames", type=int, default=10, help="frames per sequence (10 Hz)")
    p.add_argument("--seed", type=int, default=0, help="same seed -> identical files")
    p.add_argument("--preview", action="store_true",
                   help="also write preview/NN_overlay.png and preview/NN_bev.png")
    p.add_argument("--beams", type=int, choices=(128, 64, 32, 16), default=None,
                   help="LiDAR preset (default 64; with --randomise drawn per sequence from "
                        "32, 64, 128 unless given)")
    p.add_argument("--width", type=int, default=1242, help="image width (pixels)")
    p.add_argument("--height", type=int, default=375, help="image height (pixels)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete existing sequences/NN folders that this run writes")
    p.add_argument("--jitter-deg", type=float, default=0.0,
                   help="per-sequence extrinsic rotation jitter (std, degrees)")
    p.add_argument("--jitter-m", type=float, default=0.0,
                   help="per-sequence extrinsic translation jitter (std, metres)")
    p.add_argument("--randomise", action="store_true",
                   help="domain randomisation: per sequence camera look, lens distortion "
                        "(calib.txt D2), sun, materials and LiDAR (32/64/128 beams)")
    p.add_argument("--workers", type=int, default=1,
                   help="sequences generated at once, one process each (same output)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.frames < 1:
        raise SystemExit(f"--frames must be >= 1, got {args.frames}")
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    if args.seed < 0:
        raise SystemExit(f"--seed must be >= 0, got {args.seed}")
    try:
        config = SyntheticConfig(
            width=args.width,
            height=args.height,
            beams=args.beams or 64,
            extrinsic_jitter_rad=math.radians(args.jitter_deg),
            extrinsic_jitter_m=args.jitter_m,
            randomise=RandomiseConfig(
                enabled=args.randomise,
                beams=(args.beams,) if args.beams else RandomiseConfig.beams),
        )
        write_dataset(args.out, args.sequences, args.frames, args.seed, config, args.preview,
                      args.overwrite, args.workers)
    except (ValueError, FileExistsError) as err:
        raise SystemExit(f"make_synthetic: {err}") from err
    return 0


if __name__ == "__main__":
    sys.exit(main())
