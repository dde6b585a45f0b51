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


def _killed_inside(write: str, tmp_path) -> None:
    """Run `write` (Python, `out` = tmp_path) in a process that SIGKILLs itself mid-write."""
    import signal
    import subprocess
    import sys

    script = ("import os, signal, sys\nfrom pathlib import Path\n"
              "from nclr_core.atomic_write import atomic_path, atomic_paths\n"
              f"out = Path(sys.argv[1])\n{write}\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)])
    assert done.returncode == -signal.SIGKILL


def test_a_set_of_files_is_replaced_all_or_nothing_when_a_folder_is_in_the_way(tmp_path):
    from nclr_core.atomic_write import atomic_paths

    names = ["a.yaml", "b.json", "c.urdf", "d.sh"]
    for name in names:
        (tmp_path / name).write_text("old")
    (tmp_path / "c.urdf").unlink()
    (tmp_path / "c.urdf").mkdir()
    with pytest.raises(IsADirectoryError, match="c.urdf"), \
            atomic_paths([tmp_path / n for n in names]) as temps:
        for tmp in temps:
            tmp.write_text("new")
    assert [(tmp_path / n).read_text() for n in ("a.yaml", "b.json", "d.sh")] == ["old"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_a_rename_failing_midway_puts_back_the_files_already_replaced(tmp_path, monkeypatch):
    import os

    from nclr_core import atomic_write

    (tmp_path / "a.txt").write_text("old a")  # b.txt and c.txt do not exist yet
    real_replace, calls = os.replace, []

    def replace_failing_third(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_write.os, "replace", replace_failing_third)
    with pytest.raises(OSError, match="No space left"), atomic_write.atomic_paths(
            [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"]) as temps:
        for tmp in temps:
            tmp.write_text("new")
    monkeypatch.undo()
    assert (tmp_path / "a.txt").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_temp_files_of_killed_writers_are_removed_live_ones_kept(tmp_path):
    import os

    from nclr_core.atomic_write import remove_stale_temporaries

    _killed_inside("with atomic_path(out / 'last.pt') as tmp:\n"
                   "    tmp.write_bytes(b'x' * 100000)\n"
                   "    os.kill(os.getpid(), signal.SIGKILL)", tmp_path)
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".last.tmp-") and left.suffix == ".pt"
    live = tmp_path / f".last.tmp-{os.getpid()}-abc.pt"
    live.write_text("in progress")
    unrelated = tmp_path / ".last.backup.pt"
    unrelated.write_text("the user's")
    assert remove_stale_temporaries(tmp_path, ["best.pt"]) == []
    assert remove_stale_temporaries(tmp_path, ["last.pt"]) == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])
