"""Atomic file writes: temp files in the target's folder, then `os.replace`.

Readers never see a half-written file: either the old content or the new one. A set of files
(`atomic_paths`) is replaced all or nothing: every temp file is written first, then the
renames run, and a rename that fails puts back the files already replaced.

Temp names are `.<stem>.tmp-<pid>-<random><suffix>`: the pid of the writer is in the name, so
`remove_stale_temporaries` can tell the leftovers of a writer that was killed (its process
is gone) from the temp files of a writer still at work.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

TEMP_MARK = ".tmp-"


def _read_umask() -> int:
    """The process umask (read once at import: os.umask can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def temp_prefix(path: Path) -> str:
    """The name prefix of this process's temp files for `path` (suffix: `path.suffix`)."""
    return f".{path.stem}{TEMP_MARK}{os.getpid()}-"


def _fsync_path(path: Path) -> None:
    """Flush a written file, or a folder's entries, to the disk (best effort for folders)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if path.is_dir():
            return  # some file systems do not open folders; the rename is still atomic
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def _new_temp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; give the usual mode
    return Path(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed.

    The temp name keeps the suffix of `path`, so writers that pick a format from the
    extension (cv2.imwrite, matplotlib) work unchanged. The content is flushed to the disk
    before the rename.
    """
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yield one temp path per target; on success all targets are replaced, or none is.

    Every temp file is written (by the caller) and flushed before the first rename. A target
    that is a folder is refused before anything is renamed (IsADirectoryError); a rename
    that fails all the same restores the targets already replaced (their old content, or
    no file where there was none) and raises. Temp files are removed in every case.
    """
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            temps.append(_new_temp(target))
        yield temps
        for tmp in temps:
            _fsync_path(tmp)
        _replace_all(list(zip(temps, targets, strict=True)))
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def _replace_all(moves: list[tuple[Path, Path]]) -> None:
    """os.replace each (temp, target); on a failure undo the renames already done."""
    for _, target in moves:
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way of the file "
                                    "(nothing was written)", str(target))
    done: list[tuple[Path, Path | None]] = []  # (target, backup of its old content)
    with ExitStack() as cleanup:
        try:
            for tmp, target in moves:
                backup = None
                if target.exists():
                    backup = _new_temp(target)
                    cleanup.callback(backup.unlink, missing_ok=True)
                    _keep_copy(target, backup)
                os.replace(tmp, target)
                done.append((target, backup))
        except BaseException:
            for target, backup in reversed(done):
                if backup is None:
                    target.unlink(missing_ok=True)
                else:
                    os.replace(backup, target)
            raise
    for parent in {target.parent for _, target in moves}:
        _fsync_path(parent)


def _keep_copy(path: Path, backup: Path) -> None:
    """Make `backup` hold the content of `path` (a hard link where the file system has them)."""
    backup.unlink()
    try:
        os.link(path, backup)
    except OSError:
        shutil.copy2(path, backup)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_temporaries(directory: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Remove the temp files (and temp folders) of the targets `names` in `directory` that
    were left by writers no longer running (killed mid-write); returns what was removed.

    Temp files of live processes, this one included, are kept.
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for name in names:
        target = Path(name)
        for leftover in directory.glob(f".{target.stem}{TEMP_MARK}*{target.suffix}"):
            pid_text = leftover.name[len(f".{target.stem}{TEMP_MARK}"):].split("-", 1)[0]
            if not pid_text.isdigit() or _writer_alive(int(pid_text)):
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed
