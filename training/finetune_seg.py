"""Fine-tune the NCLR point backbone for semantic (or panoptic) segmentation (METHOD.md §7).

    python training/finetune_seg.py --data data/synthetic --label-fraction 0.01 \
        --init models/nclr_synthetic.pt --seed 0 [--out runs/ft/nclr_1pc_s0] \
        [--test-data data/eval_seed2 --test-split 00 01] \
        [--config training/configs/finetune_synthetic_cpu.yaml] [--set train.epoch_scale=1]

`--init scratch` trains from random weights; otherwise CHECKPOINT is a pre-training
checkpoint or a backbone exported by `training/export_backbone.py`. The labelled scans are a
deterministic, scene-level subset of the training split per (fraction, seed), nested across
fractions (`nclr_core.data.label_subsets`). The schedule's length follows the label fraction
(the paper's epochs times `train.epoch_scale`); the checkpoint of the best validation mIoU is
kept, training stops early when validation stops improving, and the kept checkpoint is
evaluated on --test-split (held-out scenes, under --test-data or --data) or else on the
validation split. Writes config.yaml, train.log, tb/, label_subset.json,
checkpoints/{best,last}.pt and metrics.json into --out, or else into a new run folder
`<output_root>/<name>/<timestamp>` as pre-training does (`nclr_core.engine.finetune`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nclr_core.checkpoint import CheckpointError
from nclr_core.config import ConfigError, load_config
from nclr_core.engine.finetune import finetune
from nclr_core.engine.finetune_config import FinetuneConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "finetune_synthetic_cpu.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset root (SemanticKITTI layout)")
    parser.add_argument("--label-fraction", type=float, required=True,
                        help="share of the labelled training scans used, in (0, 1]")
    parser.add_argument("--init", required=True,
                        help="'scratch' or a pre-training / backbone checkpoint")
    parser.add_argument("--seed", type=int, required=True, help="seed of subset and training")
    parser.add_argument("--out", default=None,
                        help="output folder (default: a new run folder "
                             "<output_root>/<name>/<timestamp> of the config)")
    parser.add_argument("--test-data", default=None,
                        help="root of the held-out evaluation scans (default: --data)")
    parser.add_argument("--test-split", nargs="+", default=None, metavar="SEQ",
                        help="sequences the kept checkpoint is evaluated on (default: the "
                             "config's data.test_split, else the validation split)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (repeatable)")
    args = parser.parse_args(argv)
    if args.init != "scratch" and not Path(args.init).is_file():
        print(f"finetune_seg.py: error: --init checkpoint not found: {args.init}",
              file=sys.stderr)
        return 2
    try:
        cfg = load_config(FinetuneConfig, args.config, args.overrides)
        # The flags are config values too, so the saved config.yaml tells the whole run.
        cfg.data.root, cfg.label_fraction = args.data, args.label_fraction
        cfg.init, cfg.seed = args.init, args.seed
        if args.test_data is not None:
            cfg.data.test_root = args.test_data
        if args.test_split is not None:
            cfg.data.test_split = list(args.test_split)
        finetune(cfg, args.out)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"finetune_seg.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
