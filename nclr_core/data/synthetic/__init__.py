"""Synthetic driving scenes: procedural streets seen by a ray-cast camera and LiDAR.

`SyntheticSequence(seed, index, num_frames, SyntheticConfig())` generates frames on demand;
`writer.write_dataset` writes them in the SemanticKITTI layout (see training/make_synthetic.py).
"""
from nclr_core.data.synthetic.sequence import SyntheticConfig, SyntheticFrame, SyntheticSequence

__all__ = ["SyntheticConfig", "SyntheticFrame", "SyntheticSequence"]
