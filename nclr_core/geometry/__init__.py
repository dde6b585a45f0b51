"""Geometry core: SE(3) helpers, camera models, LiDAR-to-image projection, pose metrics.

NumPy float64 throughout. `T_a_b` (4, 4) maps points from frame b into frame a
(`p_a = R p_b + t`); pixel coordinates are (u = column, v = row) with pixel centres at
integer coordinates.
"""
