"""Synthetic driving scenes: procedural streets seen by a ray-cast camera and LiDAR.

`SyntheticSequence(seed, index, num_frames, SyntheticConfig())` generates frames on demand;
`writer.write_dataset` writes them in the SemanticKITTI layout (see training/make_synthetic.py).
`SyntheticConfig(randomise=RandomiseConfig(enabled=True))` randomises each sequence's sensors.
"""
from nclr_core.data.synthetic.randomise import RandomiseConfig
from nclr_core.data.synthetic.sequence import SyntheticConfig, SyntheticFrame, SyntheticSequence

__all__ = ["RandomiseConfig", "SyntheticConfig", "SyntheticFrame", "SyntheticSequence"]
