"""Checkpoints round-trip through weights_only loading and fail clearly when bad."""
import pytest
import torch

from nclr_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


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


def test_an_empty_file_says_so(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: not a readable checkpoint \(the file "
                                              r"is empty: 0 bytes\)"):
        load_checkpoint(empty)
    truncated = tmp_path / "truncated.pt"
    torch.save({"format_version": 1, "w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: not a readable checkpoint \(\w+"
                                              r"Error: \S"):
        load_checkpoint(truncated)


def test_the_next_save_removes_the_temp_file_of_a_killed_save(tmp_path):
    import signal
    import subprocess
    import sys

    path = tmp_path / "checkpoints" / "last.pt"
    script = ("import os, signal, sys, torch\n"
              "from nclr_core import checkpoint\n"
              "def killed_mid_write(payload, tmp):\n"
              "    tmp.write_bytes(b'PK' + bytes(1 << 20))\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "checkpoint.torch.save = killed_mid_write\n"
              "checkpoint.save_checkpoint(sys.argv[1], step=1)\n")
    done = subprocess.run([sys.executable, "-c", script, str(path)])
    assert done.returncode == -signal.SIGKILL
    (left,) = path.parent.iterdir()
    assert left.name.startswith(".last.tmp-") and left.stat().st_size > 1 << 20
    save_checkpoint(path, step=2)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    assert load_checkpoint(path)["step"] == 2
