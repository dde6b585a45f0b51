"""Pre-train NCLR on synchronized camera + LiDAR frames (METHOD.md §6).

    python training/pretrain.py --config training/configs/synthetic_cpu.yaml \
        [--set train.epochs=5 --set data.root=/data/kitti] [--resume runs/x/y/checkpoints/last.pt]

Multi-process: torchrun --nproc_per_node N training/pretrain.py --config ...
"""
from __future__ import annotations

import argparse
import sys

from nclr_core.checkpoint import CheckpointError, load_checkpoint
from nclr_core.config import ConfigError, load_config
from nclr_core.data.rosbag.messages import BagError
from nclr_core.engine.pretrain_config import PretrainConfig
from nclr_core.engine.trainer import config_from_checkpoint, pretrain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML config (training/configs/*.yaml)")
    source.add_argument("--resume", help="checkpoint to continue from, in its run folder "
                        "and with its run's config (--set still applies)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (repeatable)")
    args = parser.parse_args(argv)
    try:
        if args.resume:
            checkpoint = load_checkpoint(args.resume)
            cfg = config_from_checkpoint(checkpoint, args.overrides)
        else:
            checkpoint = None
            cfg = load_config(PretrainConfig, args.config, args.overrides)
        pretrain(cfg, resume=args.resume, checkpoint=checkpoint)
    except (ConfigError, CheckpointError, FileNotFoundError, BagError) as err:
        print(f"pretrain.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
