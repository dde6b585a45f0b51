"""Files the package installs under share/nclr_ros/{config,models} (or the source tree's)."""
from __future__ import annotations

from pathlib import Path

PACKAGE = "nclr_ros"


def package_file(folder: str, name: str) -> Path | None:
    """`folder/name` in the installed share/nclr_ros, else in the source tree (editable
    install); None where neither has it."""
    candidates = []
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)) / folder)
        except (PackageNotFoundError, OSError):  # not installed; no AMENT_PREFIX_PATH
            pass
    except ImportError:
        pass
    candidates.append(Path(__file__).resolve().parents[1] / folder)  # editable / source
    for directory in candidates:
        if (directory / name).is_file():
            return directory / name
    return None


def config_file(name: str) -> Path | None:
    """`name` in the package's config/ (see `package_file`)."""
    return package_file("config", name)
