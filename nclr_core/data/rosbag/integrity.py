"""Integrity of rosbag2 bags: checksums on the bags nclr-bag writes, a full check of any bag.

A damaged bag must fail with a named error, never be read silently wrong, so every tool
checks a bag with `check_bag` before it reads or publishes anything. Each storage file is
checked by its format's module (`mcap_integrity`, `sqlite_integrity` beside this one);
`seal_bag` adds their CRCs to a bag just written.

metadata.yaml, which the readers trust for topic names, types and hashes, has a copy inside
the storage file (rosbag2 writes one: the sqlite3 `metadata` table, the mcap `rosbag2`
metadata record), under the CRCs of the storage file; the two must agree.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from nclr_core.data.rosbag.integrity_report import Damage, IntegrityReport
from nclr_core.data.rosbag.mcap_integrity import seal_mcap, verify_mcap
from nclr_core.data.rosbag.messages import BagError
from nclr_core.data.rosbag.sqlite_integrity import seal_sqlite, verify_sqlite


def bag_files(path: Path) -> tuple[str, list[Path], dict]:
    """(storage identifier, storage files, the `rosbag2_bagfile_information` mapping) from the
    bag's metadata.yaml; BagError if unusable."""
    if not path.is_dir():
        raise BagError(f"{path}: bag not found" if not path.exists()
                       else f"{path}: a bag is a folder, this is a file")
    meta = path / "metadata.yaml"
    if not meta.is_file():
        raise BagError(f"{path}: not a readable rosbag2 bag (metadata.yaml is missing)")
    try:
        doc = yaml.safe_load(meta.read_text(encoding="utf-8"))
        info = doc["rosbag2_bagfile_information"]
        storage = str(info["storage_identifier"])
        names = [Path(str(name)).name for name in info["relative_file_paths"]]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError,
            AttributeError) as err:
        raise BagError(f"{path}: not a readable rosbag2 bag (metadata.yaml is garbled: "
                       f"{type(err).__name__}: {' '.join(str(err).split())[:200]})") from err
    if storage not in ("sqlite3", "mcap"):
        raise BagError(f"{path}: not a readable rosbag2 bag (storage {storage!r}; "
                       "sqlite3 and mcap are supported)")
    files = [path / name for name in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing or not files:
        raise BagError(f"{path}: not a readable rosbag2 bag (storage file(s) missing: "
                       f"{', '.join(missing) or 'none listed'})")
    return storage, files, info


def _compare_metadata(info: dict, embedded: str | None, name: str,
                      report: IntegrityReport) -> None:
    """metadata.yaml must equal the copy stored in the storage file `name` (when it has one)."""
    if embedded is None:
        report.unchecked += 1
        return
    try:
        copy = yaml.safe_load(embedded)
    except yaml.YAMLError:
        report.damage.append(Damage(f"{name}: its copy of the metadata is not YAML"))
        return
    if copy == info:
        report.checksums += 1
        return
    if not isinstance(copy, dict):
        report.damage.append(Damage(f"{name}: its copy of the metadata is not a mapping"))
        return
    keys = sorted(k for k in set(info) | set(copy) if info.get(k) != copy.get(k))
    topics = tuple(sorted(
        str(entry.get("topic_metadata", {}).get("name", "?"))
        for entry in info.get("topics_with_message_count") or []
        if isinstance(entry, dict) and entry not in (copy.get("topics_with_message_count")
                                                     or [])))
    report.damage.append(Damage(f"metadata.yaml disagrees with the copy in {name} "
                                f"({', '.join(keys)})", topics))


def verify_bag(path: str | Path) -> IntegrityReport:
    """Check every storage file of the bag at `path` (see the module docstring).

    Returns the report (its `damage` lists what is wrong); BagError when the bag's metadata
    cannot be used at all.
    """
    path = Path(path)
    storage, files, info = bag_files(path)
    report = IntegrityReport(storage, [f.name for f in files])
    for file in files:
        if file.suffix == ".mcap":
            _compare_metadata(info, verify_mcap(file, report), file.name, report)
        elif file.suffix == ".db3":
            _compare_metadata(info, verify_sqlite(file, report), file.name, report)
        else:
            report.damage.append(Damage(f"{file.name}: cannot check a {file.suffix} file "
                                        "(compressed bags are not supported)"))
    return report


def check_bag(path: str | Path) -> IntegrityReport:
    """`verify_bag`, raising BagError (one line) when anything is damaged."""
    report = verify_bag(path)
    report.raise_if_damaged(Path(path))
    return report


def seal_bag(path: str | Path) -> None:
    """Add the CRCs (see the module docstring) to every storage file of a bag just written."""
    _, files, _ = bag_files(Path(path))
    for file in files:
        if file.suffix == ".mcap":
            seal_mcap(file)
        elif file.suffix == ".db3":
            seal_sqlite(file)

