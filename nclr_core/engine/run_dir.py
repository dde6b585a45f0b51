"""Run folders `runs/<name>/<timestamp>/` and stdlib logging to console + train.log."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path


def create_run_dir(root: str | os.PathLike, name: str) -> Path:
    """Make `root/name/<YYYYmmdd-HHMMSS>` (suffixed when that second is taken)."""
    base = Path(root) / name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = base / stamp
    suffix = 1
    while run.exists():
        run = base / f"{stamp}-{suffix}"
        suffix += 1
    (run / "checkpoints").mkdir(parents=True)
    return run


def setup_logging(log_file: str | os.PathLike | None = None, rank: int = 0,
                  level: int = logging.INFO) -> logging.Logger:
    """Configure the `nclr` logger: console on every rank (prefixed), file on rank 0."""
    logger = logging.getLogger("nclr")
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    prefix = f"[rank {rank}] " if rank else ""
    fmt = logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
                            "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if log_file is not None and rank == 0:
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger
