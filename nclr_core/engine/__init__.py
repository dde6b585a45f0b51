"""Training engine: checkpoints, run folders and logging, distributed helpers, the loop."""
