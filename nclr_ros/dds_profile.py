"""Apply the package's Fast DDS profile for large messages unless the user chose one.

`config/fastdds_large_data.xml` enlarges Fast DDS's shared-memory segment so that best-effort
clouds of a few MB are not lost (see the file). Fast DDS reads the profile path from the
environment when the first participant is created, so `apply_default_profile` must run
before `rclpy.init`. The launch files do the same for the processes they start.
"""
from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from nclr_ros.package_files import config_file

PROFILE_NAME = "fastdds_large_data.xml"
# Either variable selects a profile file (FASTRTPS_... is the name before Fast DDS 2.x).
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def default_profile_path() -> Path | None:
    """The installed profile (share/nclr_ros/config), else the source tree's; None if absent."""
    return config_file(PROFILE_NAME)


def apply_default_profile(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set FASTDDS_DEFAULT_PROFILES_FILE to the package profile when no profile variable is set.

    Returns the path it set, or None when the user's setting was kept or no profile exists.
    """
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in PROFILE_VARIABLES):
        return None
    path = default_profile_path()
    if path is None:
        return None
    env[PROFILE_VARIABLES[0]] = str(path)
    return str(path)
