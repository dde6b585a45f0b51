"""Transforms between two frames of a /tf_static tree, through any chain of its edges."""
from __future__ import annotations

from collections import deque

import numpy as np

from nclr_core.geometry.se3 import invert


def lookup_transform(transforms: dict[tuple[str, str], np.ndarray], target: str,
                     source: str) -> np.ndarray | None:
    """T_target_source (4, 4), mapping points of frame `source` into frame `target`.

    `transforms`: {(parent, child): T_parent_child}, as `read_tf_static` returns them; each
    edge may be walked either way (a child -> parent step uses the inverse). None when no
    chain of edges links the two frames (or they are the same frame).
    """
    if target == source:
        return None
    edges: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (parent, child), T in transforms.items():
        edges.setdefault(parent, []).append((child, np.asarray(T, dtype=np.float64)))
        edges.setdefault(child, []).append((parent, invert(T)))
    # breadth first from the target: T_target_frame of each frame reached
    reached = {target: np.eye(4)}
    queue = deque([target])
    while queue:
        frame = queue.popleft()
        for neighbour, T_frame_neighbour in edges.get(frame, []):
            if neighbour not in reached:
                reached[neighbour] = reached[frame] @ T_frame_neighbour
                queue.append(neighbour)
    return reached.get(source)
