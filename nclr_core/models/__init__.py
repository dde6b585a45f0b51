"""NCLR networks: encoders, fusion, heads, alignment, matching, the calibration net."""
