"""`metrics.json` files: strict JSON (non-finite numbers become null), written atomically."""
from __future__ import annotations

import json
import math
import os
from typing import Any

from nclr_core.atomic_write import write_text_atomic


def json_safe(value: Any) -> Any:
    """Nested dicts/lists with NaN and ±inf replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_metrics_json(path: str | os.PathLike, metrics: dict) -> None:
    """Write `metrics` as indented strict JSON through a temp file and a rename."""
    write_text_atomic(path, json.dumps(json_safe(metrics), indent=2, allow_nan=False) + "\n")
