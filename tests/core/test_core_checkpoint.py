"""Checkpoints round-trip through weights_only loading and fail clearly when bad."""
import pytest
import torch

from nclr_core.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip_with_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optim.step()
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, model=model.state_dict(), optimizer=optim.state_dict(), step=7,
                    config={"a": {"b": 1.5}})
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == 1
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["config"] == {"a": {"b": 1.5}}
    restored = torch.nn.Linear(3, 2)
    restored.load_state_dict(loaded["model"])
    assert torch.equal(restored.weight, model.weight)
    torch.optim.AdamW(restored.parameters(), lr=1e-3).load_state_dict(loaded["optimizer"])


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a zip")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(foreign)
