"""Integrity of sqlite3 storage files (.db3): the CRCs nclr-bag writes, and a check of any file.

`seal_sqlite` adds the table `nclr_crc` (CRC-32 of every row of every table: `messages`,
`topics`, `message_definitions`, `metadata`, `schema`); ROS tools ignore tables they do not
know. Text is read as the bytes it holds (undecodable UTF-8 included), so damaged text is a
CRC mismatch, not a decoding error. `verify_sqlite` runs `PRAGMA integrity_check`
(quick_check plus the index contents, which the reader's timestamp order relies on), reads
every row, and compares the CRCs when the table is there. Without it (a bag recorded
elsewhere) only the structure is checked: sqlite has no checksum of its own for the bytes
of a message. It returns the rosbag2 metadata stored in the file, for the check of
metadata.yaml.
"""
from __future__ import annotations

import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

from nclr_core.data.rosbag.integrity_report import Damage, IntegrityReport
from nclr_core.data.rosbag.messages import BagError

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
            encoded = value.encode("utf-8", "surrogateescape")
            chunk = struct.pack("<I", len(encoded)) + encoded
        else:
            chunk = struct.pack("<Q", len(value)) + bytes(value)
        crc = zlib.crc32(chunk, crc)
    return crc


def _text(raw: bytes) -> str:
    """SQLite TEXT as str; bytes that are not UTF-8 survive (surrogateescape)."""
    return raw.decode("utf-8", "surrogateescape")


def _connect(uri: str) -> sqlite3.Connection:
    con = sqlite3.connect(uri, uri=True)
    con.text_factory = _text
    return con


def _tables(con: sqlite3.Connection) -> list[str]:
    """The bag's own tables (sqlite's internal ones and the CRC table left out)."""
    return [name for (name,) in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        if name != CRC_TABLE and not name.startswith("sqlite_")]


def _rows(con: sqlite3.Connection, table: str) -> Any:
    """(rowid, *columns) of every row of `table`, in rowid order."""
    return con.execute(f'SELECT rowid, * FROM "{table}" ORDER BY rowid')


def seal_sqlite(path: Path) -> None:
    """Add the `nclr_crc` table (CRC of every row of every table) to a .db3 just written."""
    try:
        con = _connect(f"file:{path}")
        with con:
            con.execute(f"CREATE TABLE {CRC_TABLE}(tbl TEXT NOT NULL, id INTEGER NOT NULL, "
                        "crc INTEGER NOT NULL, PRIMARY KEY (tbl, id))")
            con.executemany(f"INSERT INTO {CRC_TABLE} VALUES (?, ?, ?)",
                            [(table, row[0], _row_crc(*row)) for table in _tables(con)
                             for row in _rows(con, table)])
        con.close()
    except sqlite3.Error as err:
        raise BagError(f"{path}: cannot add CRCs ({err})") from err


def verify_sqlite(path: Path, report: IntegrityReport) -> str | None:
    """Check one .db3 file; appends what is wrong to `report.damage`. Returns the rosbag2
    metadata stored in the file (None when it has none or it cannot be read)."""
    try:
        con = _connect(f"file:{path}?mode=ro&immutable=1")
    except sqlite3.Error as err:
        report.damage.append(Damage(f"{path.name}: cannot open ({err})"))
        return None
    try:
        return _verify_sqlite(con, path, report)
    except (sqlite3.Error, UnicodeError) as err:  # UnicodeError: a damaged name in the schema
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
    tables = _tables(con)
    topics = ({int(rid): str(name) for rid, name in con.execute("SELECT id, name FROM topics")}
              if "topics" in tables else {})
    has_crc = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                          "name = ?", (CRC_TABLE,)).fetchone()[0] == 1
    stored: dict[tuple[str, int], int] = {}
    if has_crc:
        stored = {(tbl, rid): crc for tbl, rid, crc in
                  con.execute(f"SELECT tbl, id, crc FROM {CRC_TABLE}")}
    metadata = None
    for table in (t for t in tables if t != "messages"):
        for row in _rows(con, table):
            if table == "metadata":
                metadata = row[-1] if isinstance(row[-1], str) else None
            if not has_crc:
                continue
            if stored.pop((table, row[0]), None) == _row_crc(*row):
                report.checksums += 1
                continue
            where = (topics.get(row[0], f"topic id {row[0]}"),) if table == "topics" else ()
            report.damage.append(Damage(f"{path.name}: row {row[0]} of table {table} fails "
                                        "its CRC", where))
    bad: dict[str, list[int]] = {}
    last: tuple[int, int] | None = None
    try:
        for row in (_rows(con, "messages") if "messages" in tables else ()):
            report.messages += 1
            topic_id, stamp = row[2], row[3]
            last = (topic_id, stamp)
            if not has_crc:
                report.unchecked += 1
            elif stored.pop(("messages", row[0]), None) != _row_crc(*row):
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
    if has_crc and stored:
        report.damage.append(Damage(f"{path.name}: {len(stored)} row(s) with a CRC are "
                                    "missing"))
    return metadata
