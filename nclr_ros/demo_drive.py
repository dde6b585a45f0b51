"""The demos' synthetic drive: generated with a held-out seed and written as a ROS 2 bag.

`add_drive_arguments` gives a demo its --frames/--width/--height/--beams options;
`make_drive_bag` writes `<out>/synthetic` (the data set) and `<out>/bag` (`bag_convert`),
replacing both.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

DEMO_SEED = 1  # held out: the shipped models were trained on seed 0

log = logging.getLogger("nclr.demo")


def add_drive_arguments(parser: argparse.ArgumentParser, frames: int) -> None:
    """The drive's options (`frames`: the default length, frames at 10 Hz)."""
    parser.add_argument("--frames", type=int, default=frames, help="frames of the drive (10 Hz)")
    parser.add_argument("--width", type=int, default=1242, help="image width (pixels)")
    parser.add_argument("--height", type=int, default=375, help="image height (pixels)")
    parser.add_argument("--beams", type=int, choices=(64, 32, 16), default=64,
                        help="LiDAR preset")


def make_drive_bag(out: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Generate the drive of `args` (`add_drive_arguments`) and write it as a bag;
    returns (data root, bag folder) under `out`."""
    from nclr_core.data.synthetic.sequence import SyntheticConfig
    from nclr_core.data.synthetic.writer import write_dataset
    from nclr_ros.bag_convert import convert

    data, bag = out / "synthetic", out / "bag"
    log.info("1/3 generating %d synthetic frames (%dx%d, %d beams, seed %d) in %s",
             args.frames, args.width, args.height, args.beams, DEMO_SEED, data)
    write_dataset(data, 1, args.frames, DEMO_SEED,
                  SyntheticConfig(width=args.width, height=args.height, beams=args.beams),
                  overwrite=True)
    if bag.exists():
        shutil.rmtree(bag)
    log.info("2/3 converting to the bag %s", bag)
    convert("synthetic", data, bag)
    return data, bag
