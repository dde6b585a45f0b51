"""Atomic writes leave either the old file or the new one, never a partial file."""
import pytest

from nclr_core.atomic_write import atomic_path, write_text_atomic


def test_write_replaces_content(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_failure_mid_write_keeps_old_file(tmp_path):
    target = tmp_path / "a.png"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".png"
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_written_files_get_the_usual_permissions(tmp_path):
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    target = tmp_path / "atomic.txt"
    write_text_atomic(target, "x")
    assert target.stat().st_mode == reference.stat().st_mode
