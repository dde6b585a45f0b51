"""metrics.json is strict JSON: NaN and infinities become null."""
import json
import math

from nclr_core.engine.metrics_file import write_metrics_json


def test_non_finite_numbers_become_null(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics_json(path, {"a": math.nan, "b": [1.5, -math.inf], "c": {"d": 2}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": {"d": 2}}
