"""Integrity of sqlite3 storage files (.db3): the CRCs nclr-bag writes, and a check of any file.

`seal_sqlite` adds the table `nclr_crc` (CRC-32 of every row of `messages`, over topic id,
timestamp and data, and of every row of `topics` and `metadata`); ROS tools ignore tables
they do not know. `verify_sqlite` runs `PRAGMA integrity_check` (quick_check plus the index
contents, which the reader's timestamp order relies on), reads every row, and compares the
CRCs when the table is there. Without it (a bag recorded elsewhere) only the structure is
checked: sqlite has no checksum of its own for the bytes of a message. It returns the
rosbag2 metadata stored in the file, for the check of metadata.yaml.
"""
from __future__ import annotations

import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

from nclr_ros.bag_messages import BagError
from nclr_ros.integrity_report import Damage, IntegrityReport

CRC_TABLE = "nclr_crc"


def _row_crc(*values: Any) -> int:
    """CRC-32 of a row: integers as int64, text as UTF-8 with its length, blobs as bytes."""
    crc = 0
    for value in values:
        if value is None:
            chunk = b"\x00"
        elif isinstance(value, int):
            chunk = struct.pack("<q", value)
        elif isinstance(value, float):
            chunk = struct.pack("<d", value)
        elif isinstance(value, str):
            encoded = value.encode("utf-8")
            chunk = struct.pack("<I", len(encoded)) + encoded
        else:
            chunk = struct.pack("<Q", len(value)) + bytes(value)
        crc = zlib.crc32(chunk, crc)
    return crc


_TOPIC_COLUMNS = "id, name, type, serialization_format, offered_qos_profiles"
_METADATA_COLUMNS = "id, metadata_version, metadata"


def seal_sqlite(path: Path) -> None:
    """Add the `nclr_crc` table (CRC of every message and topic row) to a .db3 just written."""
    try:
        with sqlite3.connect(path) as con:
            con.execute(f"CREATE TABLE {CRC_TABLE}(tbl TEXT NOT NULL, id INTEGER NOT NULL, "
                        "crc INTEGER NOT NULL, PRIMARY KEY (tbl, id))")
            rows = [("topics", row[0], _row_crc(*row))
                    for row in con.execute(f"SELECT {_TOPIC_COLUMNS} FROM topics")]
            rows += [("messages", row[0], _row_crc(*row)) for row in con.execute(
                "SELECT id, topic_id, timestamp, data FROM messages")]
            rows += [("metadata", row[0], _row_crc(*row)) for row in con.execute(
                f"SELECT {_METADATA_COLUMNS} FROM metadata")]
            con.executemany(f"INSERT INTO {CRC_TABLE} VALUES (?, ?, ?)", rows)
        con.close()
    except sqlite3.Error as err:
        raise BagError(f"{path}: cannot add CRCs ({err})") from err


def verify_sqlite(path: Path, report: IntegrityReport) -> str | None:
    """Check one .db3 file; appends what is wrong to `report.damage`. Returns the rosbag2
    metadata stored in the file (None when it has none or it cannot be read)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as err:
        report.damage.append(Damage(f"{path.name}: cannot open ({err})"))
        return None
    try:
        return _verify_sqlite(con, path, report)
    except sqlite3.Error as err:
        report.damage.append(Damage(f"{path.name}: the database is damaged ({err})"))
        return None
    finally:
        con.close()


def _verify_sqlite(con: sqlite3.Connection, path: Path,  # noqa: C901
                   report: IntegrityReport) -> str | None:
    problems = [row[0] for row in con.execute("PRAGMA integrity_check(20)")]
    if problems != ["ok"]:
        report.damage.append(Damage(f"{path.name}: sqlite integrity check failed: "
                                    f"{problems[0]}"
                                    + (f" (+{len(problems) - 1} more)" if len(problems) > 1
                                       else "")))
    topics: dict[int, str] = {}
    topic_rows = list(con.execute(f"SELECT {_TOPIC_COLUMNS} FROM topics"))
    for row in topic_rows:
        topics[row[0]] = str(row[1])
    has_crc = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                          "name = ?", (CRC_TABLE,)).fetchone()[0] == 1
    stored: dict[tuple[str, int], int] = {}
    if has_crc:
        stored = {(tbl, rid): crc for tbl, rid, crc in
                  con.execute(f"SELECT tbl, id, crc FROM {CRC_TABLE}")}
    bad_topics = [row for row in topic_rows
                  if has_crc and stored.pop(("topics", row[0]), None) != _row_crc(*row)]
    for row in bad_topics:
        report.damage.append(Damage(f"{path.name}: the topic row {row[0]} fails its CRC",
                                    (str(row[1]),)))
    report.checksums += len(topic_rows) - len(bad_topics) if has_crc else 0
    bad: dict[str, list[int]] = {}
    last: tuple[int, int] | None = None
    try:
        for rid, topic_id, stamp, blob in con.execute(
                "SELECT id, topic_id, timestamp, data FROM messages ORDER BY id"):
            report.messages += 1
            last = (topic_id, stamp)
            if not has_crc:
                report.unchecked += 1
            elif stored.pop(("messages", rid), None) != _row_crc(rid, topic_id, stamp, blob):
                bad.setdefault(topics.get(topic_id, f"topic id {topic_id}"), []).append(stamp)
            else:
                report.checksums += 1
    except sqlite3.Error as err:
        where = () if last is None else (topics.get(last[0], f"topic id {last[0]}"),)
        report.damage.append(Damage(
            f"{path.name}: rows after message {report.messages} are unreadable ({err})",
            where, None if last is None else last[1], None if last is None else last[1]))
    for topic, stamps in sorted(bad.items()):
        report.damage.append(Damage(f"{len(stamps)} message(s) fail their CRC", (topic,),
                                    min(stamps), max(stamps)))
    metadata = None
    tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = "
                                            "'table'")}
    if "metadata" in tables:
        for row in con.execute(f"SELECT {_METADATA_COLUMNS} FROM metadata ORDER BY id"):
            if has_crc and stored.pop(("metadata", row[0]), None) != _row_crc(*row):
                report.damage.append(Damage(f"{path.name}: the metadata row {row[0]} fails "
                                            "its CRC"))
            metadata = row[2] if isinstance(row[2], str) else None
    if has_crc and stored:
        report.damage.append(Damage(f"{path.name}: {len(stored)} row(s) with a CRC are "
                                    "missing"))
    return metadata
