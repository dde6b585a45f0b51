"""Config: YAML -> dataclasses, dotted overrides, clear errors, atomic save."""
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from nclr_core.config import ConfigError, load_config, save_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Schema:
    name: str = "run"
    epochs: int = 50
    similarity: Literal["lta", "cosine"] = "lta"
    optim: Optim = field(default_factory=Optim)
    checkpoint: str | None = None


def test_defaults_without_file():
    cfg = load_config(Schema)
    assert cfg == Schema()


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\noptim:\n  lr: 0.01\n")
    overrides = ["optim.lr=2e-4", "similarity=cosine", "optim.betas=[0.8, 0.9]"]
    cfg = load_config(Schema, path, overrides)
    assert cfg.epochs == 3
    assert cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.similarity == "cosine"


def test_int_accepted_for_float():
    assert load_config(Schema, None, ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.momentum=0.9", "optim.momentum"),
        ("epochs=many", "epochs"),
        ("similarity=dot", "similarity"),
        ("optim.betas=[1, 2, 3]", "optim.betas"),
        ("no_equals_sign", "dotted.key=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Schema, None, [override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Schema, tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Schema, bad)


def test_save_round_trip(tmp_path):
    cfg = load_config(Schema, None, ["checkpoint=/x/y.pt", "optim.lr=0.5"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert yaml.safe_load(out.read_text()) == to_dict(cfg)
    assert load_config(Schema, out) == cfg
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temp file left
