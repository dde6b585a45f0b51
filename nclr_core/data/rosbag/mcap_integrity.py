"""Integrity of MCAP storage files: the CRCs nclr-bag writes, and a check of any file.

`seal_mcap` fills in the CRCs that the MCAP format defines and rosbags' writer leaves at 0:
each chunk's `uncompressed_crc`, the Data End's `data_section_crc` (every byte from the
leading magic to the Data End record) and the Footer's `summary_crc` (the summary section
up to the Footer's own CRC field). With the three, a changed byte anywhere in the file is
found. `verify_mcap` walks every record, checking each length against the file before it
is used (a damaged length is never trusted), decompresses each chunk no further than its
declared size, checks each CRC that is not 0, and compares the summary's chunk indexes and
the message indexes with the chunks themselves. It returns the rosbag2 metadata stored in
the file, for the check of metadata.yaml.
"""
from __future__ import annotations

import mmap
import struct
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lz4.frame import LZ4FrameDecompressor

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from nclr_core.data.rosbag.integrity_report import Damage, IntegrityReport
from nclr_core.data.rosbag.messages import BagError

MCAP_MAGIC = b"\x89MCAP0\r\n"
_RECORD_HEAD = 9  # opcode u8 + length u64
_FOOTER_BODY = 20  # summary_start u64, summary_offset_start u64, summary_crc u32
_CHUNK_CRC_AT = _RECORD_HEAD + 24  # after message_start/end_time and uncompressed_size
OP_HEADER, OP_FOOTER, OP_CHANNEL, OP_MESSAGE = 0x01, 0x02, 0x04, 0x05
OP_CHUNK, OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_METADATA = 0x06, 0x07, 0x08, 0x0C
OP_DATA_END = 0x0F


class _Broken(Exception):
    """A part of a file cannot be parsed; the text says which."""



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

