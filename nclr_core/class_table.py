"""Class names and display colours of a segmentation model's train ids (a classes YAML such
as config/semantic_kitti_classes.yaml: `classes:` list of `{id, name, rgb}`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml


@dataclass(frozen=True)
class ClassTable:
    """names[i] and colours (C, 3) uint8 RGB of train id i."""

    names: list[str]
    colours: np.ndarray


def load_class_table(path: str | os.PathLike) -> ClassTable:
    """Read a classes YAML (`classes:` list of `{id, name, rgb}`, ids 0..C-1 in order).

    Raises ValueError naming the file for a missing or malformed file, ids out of order,
    duplicate or empty names, or colours that are not three integers in 0..255.
    """
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"classes file {path}: cannot read it ({err})") from err
    entries = content.get("classes") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"classes file {path}: needs a non-empty list 'classes'")
    names: list[str] = []
    colours: list[list[int]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"id", "name", "rgb"}:
            raise ValueError(f"classes file {path}: entry {index} must have exactly the keys "
                             f"id, name, rgb, got {entry!r}")
        if entry["id"] != index:
            raise ValueError(f"classes file {path}: entry {index} has id {entry['id']!r}; "
                             f"ids must be 0, 1, 2, ... in order")
        name, rgb = entry["name"], entry["rgb"]
        if not isinstance(name, str) or not name or name in names:
            raise ValueError(f"classes file {path}: class {index} has an empty or repeated "
                             f"name {name!r}")
        if not (isinstance(rgb, list) and len(rgb) == 3 and
                all(isinstance(c, int) and 0 <= c <= 255 for c in rgb)):
            raise ValueError(f"classes file {path}: class {index} ({name}) needs rgb as three "
                             f"integers 0..255, got {rgb!r}")
        names.append(name)
        colours.append(rgb)
    return ClassTable(names, np.asarray(colours, dtype=np.uint8))
