"""Integrity of rosbag2 bags: checksums on the bags nclr-bag writes, a full check of any bag.

A damaged bag must fail with a named error, never be read silently wrong, so every tool
checks a bag with `verify_bag` before it reads or publishes anything.

mcap: `seal_mcap` fills in the CRCs that the MCAP format defines and rosbags' writer leaves
at 0: each chunk's `uncompressed_crc`, the Data End's `data_section_crc` (every byte from
the leading magic to the Data End record) and the Footer's `summary_crc` (the summary
section up to the Footer's own CRC field). With the three, a changed byte anywhere in the
file is found. `verify_mcap` walks every record, checking each length against the file
before it is used (a damaged length is never trusted), decompresses each chunk no further
than its declared size, checks each CRC that is not 0, and compares the summary's chunk
indexes and the message indexes with the chunks themselves.

sqlite3: `seal_sqlite` adds the table `nclr_crc` (CRC-32 of every row of `messages`, over
topic id, timestamp and data, and of every row of `topics` and `metadata`); ROS tools ignore
tables they do not know. `verify_sqlite` runs `PRAGMA integrity_check` (quick_check plus index
contents, which the reader's timestamp order relies on), reads every row, and compares the
CRCs when the table is there. Without it (a bag recorded elsewhere) only the structure is
checked: sqlite has no checksum of its own for the bytes of a message.

metadata.yaml, which the readers trust for topic names, types and hashes, has a copy inside
the storage file (rosbag2 writes one: the sqlite3 `metadata` table, the mcap `rosbag2`
metadata record), under the CRCs above; the two must agree.

Damage is located by topic and time range (`Damage`), as far as the undamaged parts tell.
"""
from __future__ import annotations

import mmap
import sqlite3
import struct
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lz4.frame import LZ4FrameDecompressor

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from nclr_ros.bag_messages import BagError, ns_to_seconds

MCAP_MAGIC = b"\x89MCAP0\r\n"
_RECORD_HEAD = 9  # opcode u8 + length u64
_FOOTER_BODY = 20  # summary_start u64, summary_offset_start u64, summary_crc u32
_CHUNK_CRC_AT = _RECORD_HEAD + 24  # after message_start/end_time and uncompressed_size
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE = 0x01, 0x02, 0x03, 0x04, 0x05
OP_CHUNK, OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_METADATA = 0x06, 0x07, 0x08, 0x0C
OP_DATA_END = 0x0F
CRC_TABLE = "nclr_crc"
MAX_REPORTED = 3  # damage entries spelled out in one error line


@dataclass(frozen=True)
class Damage:
    """One damaged part of a bag: what is wrong, and where (topics, bag time in ns)."""

    what: str
    topics: tuple[str, ...] = ()
    start_ns: int | None = None
    end_ns: int | None = None

    def describe(self) -> str:
        if not self.topics and self.start_ns is None:
            return self.what
        where = ", ".join(self.topics) if self.topics else "topic unknown"
        if self.start_ns is not None and self.end_ns is not None:
            where += (f" {ns_to_seconds(self.start_ns):.3f}..{ns_to_seconds(self.end_ns):.3f} "
                      "s")
        elif self.start_ns is not None:
            where += f" after {ns_to_seconds(self.start_ns):.3f} s"
        return f"{where}: {self.what}"


@dataclass
class IntegrityReport:
    """What `verify_bag` checked: storage, files, messages read, checksums compared."""

    storage: str
    files: list[str] = field(default_factory=list)
    messages: int = 0
    checksums: int = 0
    unchecked: int = 0  # chunks or rows without a checksum (bags written elsewhere)
    damage: list[Damage] = field(default_factory=list)

    def summary(self) -> str:
        """One line: what was verified and how."""
        how = (f"{self.checksums} CRCs match" if self.checksums else "no CRCs in the bag")
        if self.unchecked:
            how += f", {self.unchecked} parts without a CRC (structure checked only)"
        return (f"integrity: {self.storage}, {len(self.files)} file(s), {self.messages} "
                f"messages readable, {how}")

    def raise_if_damaged(self, bag: Path) -> None:
        """BagError naming the bag and the damaged topics / time ranges, if any."""
        if not self.damage:
            return
        located_first = sorted(self.damage, key=lambda d: not d.topics)
        shown = "; ".join(d.describe() for d in located_first[:MAX_REPORTED])
        more = len(self.damage) - MAX_REPORTED
        raise BagError(f"{bag}: the bag is damaged: {shown}"
                       + (f" (and {more} more)" if more > 0 else ""))


class _Broken(Exception):
    """A part of a file cannot be parsed; the text says which."""


# ---------------------------------------------------------------------------------- bag
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


# ---------------------------------------------------------------------------------- mcap
@contextmanager
def _mapped(path: Path, write: bool = False) -> Iterator[Any]:
    """The file's bytes as an mmap (b"" when the file is empty)."""
    with open(path, "r+b" if write else "rb") as handle:
        if handle.seek(0, 2) == 0:
            yield b""
            return
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_WRITE if write
                         else mmap.ACCESS_READ)
        try:
            yield view
        finally:
            view.close()


class _Cursor:
    """Little-endian reads inside [pos, end) of a buffer; _Broken past the end."""

    def __init__(self, data: Any, pos: int, end: int, what: str) -> None:
        self.data, self.pos, self.end, self.what = data, pos, end, what

    def take(self, size: int) -> int:
        start = self.pos
        if size < 0 or start + size > self.end:
            raise _Broken(f"{self.what} at byte {start} runs past its end ({self.end})")
        self.pos += size
        return start

    def u(self, fmt: str) -> int:
        return struct.unpack_from("<" + fmt, self.data, self.take(struct.calcsize(fmt)))[0]

    def text(self) -> str:
        size = self.u("I")
        start = self.take(size)
        try:
            return bytes(self.data[start:start + size]).decode("utf-8")
        except UnicodeDecodeError as err:
            raise _Broken(f"{self.what} at byte {start}: a string is not UTF-8") from err

    def sized(self, width: str = "I") -> tuple[int, int]:
        """(start, end) of a length-prefixed byte field."""
        size = self.u(width)
        start = self.take(size)
        return start, start + size


def _crc(data: Any, start: int, end: int) -> int:
    """CRC-32 of data[start:end] without copying it."""
    with memoryview(data) as view:
        part = view[start:end]
        try:
            return zlib.crc32(part)
        finally:
            part.release()


def _records(data: Any, pos: int, end: int, what: str) -> Iterator[tuple[int, int, int, int]]:
    """(opcode, record start, body start, body end) of each record in [pos, end)."""
    while pos < end:
        head = _Cursor(data, pos, end, what)
        op, length = head.u("B"), head.u("Q")
        if length > end - head.pos:
            raise _Broken(f"{what}: record 0x{op:02x} at byte {pos} claims {length} bytes, "
                          f"only {end - head.pos} remain")
        yield op, pos, head.pos, head.pos + length
        pos = head.pos + length


@dataclass
class _Chunk:
    """A chunk record as found in the data section, and what its messages are."""

    start: int  # record start
    end: int  # record end
    start_ns: int
    end_ns: int
    compression: str
    compressed_size: int
    uncompressed_size: int
    crc: int
    crc_at: int
    channels: set[int] = field(default_factory=set)
    messages: dict[int, tuple[int, int]] = field(default_factory=dict)  # offset -> (ch, t)
    records: bytes | None = None


def _parse_chunk(data: Any, start: int, body: int, end: int) -> _Chunk:
    cur = _Cursor(data, body, end, f"chunk at byte {start}")
    start_ns, end_ns, size, crc = cur.u("Q"), cur.u("Q"), cur.u("Q"), cur.u("I")
    compression = cur.text()
    records_start, records_end = cur.sized("Q")
    if records_end != end:
        raise _Broken(f"chunk at byte {start}: its records end at byte {records_end}, the "
                      f"record at byte {end}")
    chunk = _Chunk(start, end, start_ns, end_ns, compression, records_end - records_start,
                   size, crc, start + _CHUNK_CRC_AT)
    chunk.records = _decompress(bytes(data[records_start:records_end]), compression, size,
                                start)
    return chunk


def _decompress(raw: bytes, compression: str, size: int, start: int) -> bytes:
    """The chunk's records, decompressed no further than `size` + 1 bytes."""
    try:
        if compression == "":
            out = raw
        elif compression == "zstd":
            out = zstd.ZstdDecompressor().decompress(raw, max_length=size + 1)
        elif compression == "lz4":
            out = LZ4FrameDecompressor().decompress(raw, max_length=size + 1)
        else:
            raise _Broken(f"chunk at byte {start}: unknown compression {compression!r}")
    except _Broken:
        raise
    except Exception as err:  # the decompressors raise several types on damaged input
        raise _Broken(f"chunk at byte {start}: cannot decompress ({type(err).__name__}: "
                      f"{err})") from err
    if len(out) != size:
        raise _Broken(f"chunk at byte {start}: {len(out)} bytes of records, the header says "
                      f"{size}")
    return out


def _scan_chunk_records(chunk: _Chunk, topics: dict[int, str]) -> None:
    """Fill the chunk's channels and messages from its records; _Broken when unparsable."""
    records = chunk.records or b""
    for op, start, body, end in _records(records, 0, len(records),
                                         f"chunk at byte {chunk.start}"):
        cur = _Cursor(records, body, end, f"record in the chunk at byte {chunk.start}")
        if op == OP_MESSAGE:
            channel, _, log_time = cur.u("H"), cur.u("I"), cur.u("Q")
            cur.take(8)
            chunk.channels.add(channel)
            chunk.messages[start] = (channel, log_time)
        elif op == OP_CHANNEL:
            channel = cur.u("H")
            cur.u("H")
            topics[channel] = cur.text()


def _chunk_damage(chunk: _Chunk, topics: dict[int, str], what: str) -> Damage:
    names = tuple(sorted(topics.get(c, f"channel {c}") for c in chunk.channels))
    return Damage(f"chunk at byte {chunk.start}: {what}", names, chunk.start_ns, chunk.end_ns)


def verify_mcap(path: Path, report: IntegrityReport) -> str | None:
    """Check one .mcap file; appends what is wrong to `report.damage`. Returns the rosbag2
    metadata stored in the file (None when it has none or it cannot be read)."""
    topics: dict[int, str] = {}
    progress: dict[str, Any] = {}  # "after_ns": end of the last intact chunk; "metadata"
    with _mapped(path) as data:
        try:
            _verify_mcap(data, path, report, topics, progress)
        except _Broken as err:
            report.damage.append(Damage(f"{path.name}: {err}", tuple(sorted(set(
                topics.values()))), progress.get("after_ns")))
            return None
    return progress.get("metadata")


def _rosbag2_metadata(data: Any, start: int, body: int, end: int) -> str | None:
    """The `serialized_metadata` of a Metadata record named "rosbag2", else None."""
    cur = _Cursor(data, body, end, f"metadata record at byte {start}")
    if cur.text() != "rosbag2":
        return None
    entries = _Cursor(data, *cur.sized("I"), cur.what)
    while entries.pos < entries.end:
        key, value = entries.text(), entries.text()
        if key == "serialized_metadata":
            return value
    return None


def _summary_topics(data: Any, footer: int, topics: dict[int, str]) -> None:
    """Channel names from the summary, when it can be read (to name damaged chunks)."""
    summary_start = struct.unpack_from("<Q", data, footer + _RECORD_HEAD)[0]
    if not 8 <= summary_start < footer:
        return
    try:
        for op, start, body, end in _records(data, summary_start, footer, "summary"):
            if op == OP_CHANNEL:
                cur = _Cursor(data, body, end, f"channel at byte {start}")
                channel = cur.u("H")
                cur.u("H")
                topics[channel] = cur.text()
    except _Broken:
        topics.clear()  # the data section's channel records may still name them


def _verify_mcap(data: Any, path: Path, report: IntegrityReport,  # noqa: C901
                 topics: dict[int, str], progress: dict[str, int]) -> None:
    size = len(data)
    tail = len(MCAP_MAGIC) + _RECORD_HEAD + _FOOTER_BODY
    if size < len(MCAP_MAGIC) + tail:
        raise _Broken(f"{size} bytes: too short for an MCAP file (truncated?)")
    if data[:8] != MCAP_MAGIC:
        raise _Broken("the leading magic is damaged")
    if data[size - 8:] != MCAP_MAGIC:
        raise _Broken("the trailing magic is missing or damaged (truncated?)")
    footer = size - tail
    if data[footer] != OP_FOOTER or struct.unpack_from("<Q", data, footer + 1)[0] != 20:
        raise _Broken(f"no footer record at byte {footer} (truncated or damaged)")
    summary_start, summary_offset_start, summary_crc = struct.unpack_from("<QQI", data,
                                                                          footer + 9)
    _summary_topics(data, footer, topics)
    chunks: dict[int, _Chunk] = {}
    indexes: list[tuple[int, int, int]] = []  # (index record start, body, end)
    data_end = None
    first = True
    for op, start, body, end in _records(data, 8, footer, path.name):
        if first and op != OP_HEADER:
            raise _Broken("the first record is not a header")
        first = False
        if op == OP_DATA_END:
            data_end = (start, body, end)
            break
        if op == OP_CHANNEL:
            cur = _Cursor(data, body, end, f"channel at byte {start}")
            channel = cur.u("H")
            cur.u("H")
            topics[channel] = cur.text()
        elif op == OP_MESSAGE:
            report.unchecked += 1
            report.messages += 1
        elif op == OP_CHUNK:
            chunk = _Chunk(start, end, 0, 0, "", 0, 0, 0, 0)
            try:
                chunk = _parse_chunk(data, start, body, end)
                _scan_chunk_records(chunk, topics)
            except _Broken as err:
                report.damage.append(_chunk_damage(chunk, topics, str(err)))
                chunks[start] = chunk
                continue
            chunks[start] = chunk
            report.messages += len(chunk.messages)
            if chunk.crc == 0:
                report.unchecked += 1
            elif zlib.crc32(chunk.records) != chunk.crc:
                report.damage.append(_chunk_damage(chunk, topics, "CRC mismatch"))
            else:
                report.checksums += 1
            if chunk.messages:
                times = [t for _, t in chunk.messages.values()]
                if (min(times), max(times)) != (chunk.start_ns, chunk.end_ns):
                    report.damage.append(_chunk_damage(
                        chunk, topics, "its time range disagrees with its messages"))
            progress["after_ns"] = chunk.end_ns
        elif op == OP_MESSAGE_INDEX:
            indexes.append((start, body, end))
        elif op == OP_METADATA:
            progress["metadata"] = _rosbag2_metadata(data, start, body, end)
    if data_end is None:
        raise _Broken("no data end record (truncated?)")
    de_start, de_body, de_end = data_end
    if de_end - de_body < 4:
        raise _Broken(f"data end record at byte {de_start} is too short")
    data_crc = struct.unpack_from("<I", data, de_body)[0]
    if data_crc:
        if _crc(data, 0, de_start) != data_crc:
            report.damage.append(Damage(
                f"{path.name}: the data section fails its CRC" + _damaged_chunks_hint(
                    chunks, report), tuple(sorted(set(topics.values())))))
        else:
            report.checksums += 1
    else:
        report.unchecked += 1
    _check_message_indexes(data, chunks, indexes, topics, report)
    if summary_start:
        if summary_start != de_end:
            raise _Broken(f"the footer puts the summary at byte {summary_start}, the data "
                          f"section ends at byte {de_end}")
        if summary_crc:
            if _crc(data, summary_start, footer + _RECORD_HEAD + 16) != summary_crc:
                raise _Broken("the summary section fails its CRC (chunk indexes, channels or "
                              "statistics are damaged)")
            report.checksums += 1
        else:
            report.unchecked += 1
        _check_chunk_indexes(data, summary_start, footer, chunks, topics, report)
    elif summary_offset_start:
        raise _Broken("the footer has a summary offset but no summary")


def _damaged_chunks_hint(chunks: dict[int, _Chunk], report: IntegrityReport) -> str:
    if any(d.what.startswith("chunk at byte") for d in report.damage):
        return " (see the damaged chunks)"
    return (" outside the chunks' records (a chunk header, a message index, the header or "
            "the metadata record)") if chunks else ""


def _check_message_indexes(data: Any, chunks: dict[int, _Chunk],
                           indexes: list[tuple[int, int, int]], topics: dict[int, str],
                           report: IntegrityReport) -> None:
    """Each message index must list the messages of the chunk before it, at their offsets."""
    ordered = sorted(chunks)
    for start, body, end in indexes:
        owner = max((c for c in ordered if c < start), default=None)
        if owner is None or chunks[owner].records is None:
            continue
        chunk = chunks[owner]
        try:
            cur = _Cursor(data, body, end, f"message index at byte {start}")
            channel = cur.u("H")
            entries_start, entries_end = cur.sized("I")
            if (entries_end - entries_start) % 16:
                raise _Broken(f"message index at byte {start}: entries are not 16 bytes each")
            for at in range(entries_start, entries_end, 16):
                log_time, offset = struct.unpack_from("<QQ", data, at)
                if chunk.messages.get(offset) != (channel, log_time):
                    raise _Broken(f"message index at byte {start} points at no message of "
                                  f"its chunk (offset {offset})")
        except _Broken as err:
            report.damage.append(_chunk_damage(chunk, topics, str(err)))


def _check_chunk_indexes(data: Any, summary_start: int, footer: int,
                         chunks: dict[int, _Chunk], topics: dict[int, str],
                         report: IntegrityReport) -> None:
    """The summary's chunk indexes must describe the chunks of the data section."""
    for op, start, body, end in _records(data, summary_start, footer, "summary"):
        if op != OP_CHUNK_INDEX:
            continue
        cur = _Cursor(data, body, end, f"chunk index at byte {start}")
        start_ns, end_ns, offset, length = cur.u("Q"), cur.u("Q"), cur.u("Q"), cur.u("Q")
        cur.sized("I")
        cur.u("Q")
        compression = cur.text()
        compressed, uncompressed = cur.u("Q"), cur.u("Q")
        chunk = chunks.get(offset)
        if chunk is None:
            raise _Broken(f"chunk index at byte {start} points at no chunk (byte {offset})")
        if chunk.records is not None and (
                (start_ns, end_ns, length, compression, compressed, uncompressed)
                != (chunk.start_ns, chunk.end_ns, chunk.end - chunk.start, chunk.compression,
                    chunk.compressed_size, chunk.uncompressed_size)):
            report.damage.append(_chunk_damage(chunk, topics,
                                               f"its index at byte {start} disagrees"))


def seal_mcap(path: Path) -> None:
    """Write the chunk, data-section and summary CRCs into an MCAP file, in place.

    BagError when the file is not a complete MCAP file.
    """
    with _mapped(path, write=True) as data:
        try:
            _seal_mcap(data, path)
        except _Broken as err:
            raise BagError(f"{path}: cannot add CRCs ({err})") from err
        if isinstance(data, mmap.mmap):
            data.flush()


def _seal_mcap(data: Any, path: Path) -> None:
    size = len(data)
    footer = size - (len(MCAP_MAGIC) + _RECORD_HEAD + _FOOTER_BODY)
    if footer < 8 or data[footer] != OP_FOOTER:
        raise _Broken("no footer record")
    for op, start, body, end in _records(data, 8, footer, path.name):
        if op == OP_CHUNK:
            chunk = _parse_chunk(data, start, body, end)
            struct.pack_into("<I", data, chunk.crc_at, zlib.crc32(chunk.records))
        elif op == OP_DATA_END:
            struct.pack_into("<I", data, body, _crc(data, 0, start))
            break
    summary_start = struct.unpack_from("<Q", data, footer + _RECORD_HEAD)[0]
    if summary_start:
        crc = _crc(data, summary_start, footer + _RECORD_HEAD + 16)
        struct.pack_into("<I", data, footer + _RECORD_HEAD + 16, crc)


# ---------------------------------------------------------------------------------- sqlite
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
