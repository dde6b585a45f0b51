"""Damaged bags: every nclr-bag command fails with one `nclr-bag: error:` line and status 2,
names the damaged topic and time range where it can, and `play` publishes nothing.

The bags are a 4-frame synthetic drive converted by `nclr-bag convert` (sqlite3 and mcap),
damaged the ways issue 16 found (fixed seed): truncated to 50 % or 1 kB, metadata.yaml
missing or garbled, 20 bytes flipped in the first or last 200, 2,000 bytes flipped in the
body (XOR 0xFF).
"""
from __future__ import annotations

import shutil
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from nclr_core.data.rosbag.integrity import verify_bag
from nclr_core.data.rosbag.mcap_integrity import MCAP_MAGIC
from nclr_core.data.rosbag.sqlite_integrity import CRC_TABLE
from nclr_ros.bag_cli import main
from nclr_ros.bag_convert import convert

REPO = Path(__file__).resolve().parents[2]
FRAMES = 4
SEED = 16


@pytest.fixture(scope="module")
def drive(tmp_path_factory, save_tiny_calibration_checkpoint) -> dict[str, Path]:
    """The drive as an intact sqlite3 bag and mcap bag, and a tiny untrained checkpoint."""
    root = tmp_path_factory.mktemp("bag_damage")
    subprocess.run(
        [sys.executable, str(REPO / "training" / "make_synthetic.py"), "--out",
         str(root / "synthetic"), "--frames", str(FRAMES), "--seed", "11", "--beams", "16",
         "--width", "320", "--height", "96"], check=True, capture_output=True, text=True)
    for storage in ("sqlite3", "mcap"):
        convert("synthetic", root / "synthetic", root / storage, storage=storage)
    return {"sqlite3": root / "sqlite3", "mcap": root / "mcap",
            "checkpoint": save_tiny_calibration_checkpoint(root / "tiny.pt")}


def _storage_file(bag: Path) -> Path:
    (file,) = [p for p in bag.iterdir() if p.suffix in (".db3", ".mcap")]
    return file


def _flip(count: int, low: Callable[[int], int], high: Callable[[int], int]
          ) -> Callable[[Path], None]:
    """XOR 0xFF into `count` distinct random bytes in [low(size), high(size))."""
    def damage(bag: Path) -> None:
        file = _storage_file(bag)
        data = bytearray(file.read_bytes())
        rng = np.random.default_rng(SEED)
        for at in rng.choice(np.arange(low(len(data)), high(len(data))), count, replace=False):
            data[at] ^= 0xFF
        file.write_bytes(bytes(data))
    return damage


def _truncate(keep: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(bag: Path) -> None:
        file = _storage_file(bag)
        data = file.read_bytes()
        file.write_bytes(data[:keep(len(data))])
    return damage


def _no_metadata(bag: Path) -> None:
    (bag / "metadata.yaml").unlink()


def _garbled_metadata(bag: Path) -> None:
    text = (bag / "metadata.yaml").read_text()
    (bag / "metadata.yaml").write_text(text[: len(text) // 3] + "\n  - [unclosed: {\n")


DAMAGE = {
    "truncated_to_half": _truncate(lambda n: n // 2),
    "truncated_to_1kB": _truncate(lambda n: 1024),
    "metadata_missing": _no_metadata,
    "metadata_garbled": _garbled_metadata,
    "header_flipped": _flip(20, lambda n: 0, lambda n: 200),
    "body_flipped": _flip(2000, lambda n: 200, lambda n: n - 200),
    "tail_flipped": _flip(20, lambda n: n - 200, lambda n: n),
}


def _damaged(drive: dict[str, Path], storage: str, kind: str, tmp_path: Path) -> Path:
    bag = tmp_path / f"{storage}_{kind}"
    shutil.copytree(drive[storage], bag)
    DAMAGE[kind](bag)
    return bag


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("nclr-bag: error: "), lines[0]
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_intact_bags_pass_check_with_their_crcs(drive, storage, capsys):
    assert main(["check", str(drive[storage])]) == 0
    out = capsys.readouterr().out
    assert f"{FRAMES} pairs from {FRAMES} images" in out
    assert "CRCs match" in out and "without a CRC" not in out
    report = verify_bag(drive[storage])
    assert not report.damage and report.unchecked == 0 and report.checksums > 0


def test_convert_seals_mcap_chunks_data_and_summary(drive):
    data = _storage_file(drive["mcap"]).read_bytes()
    assert data[-8:] == MCAP_MAGIC
    footer = len(data) - 8 - 29
    assert struct.unpack_from("<I", data, footer + 25)[0] != 0  # summary CRC
    pos, chunks, data_crc = 8, 0, None
    while data_crc is None:
        op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        if op == 0x06:
            chunks += 1
            assert struct.unpack_from("<I", data, pos + 9 + 24)[0] != 0  # uncompressed CRC
        if op == 0x0F:
            data_crc = struct.unpack_from("<I", data, pos + 9)[0]
        pos += 9 + length
    assert chunks >= 1 and data_crc != 0
    with Reader(drive["mcap"]) as reader:  # rosbags itself checks the chunk CRCs
        assert sum(1 for _ in reader.messages()) == reader.message_count


def test_convert_seals_every_sqlite_row(drive):
    with sqlite3.connect(_storage_file(drive["sqlite3"])) as con:
        rows = {table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("messages", "topics", "message_definitions", "metadata",
                              "schema")}
        crcs = dict(con.execute(f"SELECT tbl, count(*) FROM {CRC_TABLE} GROUP BY tbl"))
    con.close()
    assert crcs == rows and rows["messages"] == 3 * FRAMES + 1 and rows["metadata"] == 1


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_metadata_yaml_must_agree_with_the_copy_in_the_storage_file(drive, storage, tmp_path,
                                                                     capsys):
    """A changed type hash in metadata.yaml used to make the reader skip that topic."""
    bag = tmp_path / storage
    shutil.copytree(drive[storage], bag)
    text = (bag / "metadata.yaml").read_text()
    (bag / "metadata.yaml").write_text(text.replace("RIHS01_", "RIHS01_0", 1))
    assert main(["check", str(bag)]) == 2
    line = _one_error_line(capsys)
    assert "metadata.yaml disagrees with the copy in" in line
    assert "(topics_with_message_count)" in line


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_bag_fails_every_command_with_one_line(drive, storage, kind, tmp_path,
                                                       capsys):
    bag = _damaged(drive, storage, kind, tmp_path)
    assert main(["check", str(bag)]) == 2
    line = _one_error_line(capsys)
    assert str(bag) in line
    out = tmp_path / "eval"
    assert main(["eval", str(bag), "--checkpoint", str(drive["checkpoint"]), "--out",
                 str(out)]) == 2
    _one_error_line(capsys)
    assert not out.exists()
    # play checks the whole bag before rclpy starts: nothing can have been published
    assert main(["play", str(bag)]) == 2
    _one_error_line(capsys)


def test_issue_sqlite_pages_damage_names_the_topic_and_time(drive, tmp_path, capsys):
    """Issue 16, failure 1: 2,000 bytes XOR 0xFF over the whole .db3 (apsw.CorruptError)."""
    bag = tmp_path / "pages"
    shutil.copytree(drive["sqlite3"], bag)
    _flip(2000, lambda n: 0, lambda n: n)(bag)
    assert main(["check", str(bag)]) == 2
    assert "the bag is damaged" in _one_error_line(capsys)


def test_issue_mcap_body_damage_is_found_by_the_chunk_crcs(drive, tmp_path, capsys):
    """Issue 16, failure 3: flips inside chunks used to give a silently wrong answer."""
    bag = tmp_path / "chunks"
    shutil.copytree(drive["mcap"], bag)
    file = _storage_file(bag)
    data = bytearray(file.read_bytes())
    # one byte inside the records of the first chunk that holds a cloud
    at = data.index(b"/lidar/points") + 4096
    data[at] ^= 0xFF
    file.write_bytes(bytes(data))
    assert main(["check", str(bag)]) == 2
    line = _one_error_line(capsys)
    assert "CRC mismatch" in line and " s: chunk at byte" in line


def test_issue_mcap_header_damage_is_not_trusted(drive, tmp_path, capsys):
    """Issue 16, failure 2: a damaged record length used to end in MemoryError."""
    bag = tmp_path / "header"
    shutil.copytree(drive["mcap"], bag)
    file = _storage_file(bag)
    data = bytearray(file.read_bytes())
    struct.pack_into("<Q", data, 9, 2**62)  # the header record's length
    file.write_bytes(bytes(data))
    assert main(["check", str(bag)]) == 2
    assert "claims 4611686018427387904 bytes" in _one_error_line(capsys)


def test_damaged_sqlite_rows_are_named_by_topic_and_time(drive, tmp_path, capsys):
    bag = tmp_path / "rows"
    shutil.copytree(drive["sqlite3"], bag)
    db = _storage_file(bag)
    with sqlite3.connect(db) as con:  # a changed pixel: sqlite itself sees nothing wrong
        rid, stamp, blob = con.execute(
            "SELECT messages.id, timestamp, data FROM messages JOIN topics ON topic_id = "
            "topics.id WHERE name = '/camera/image_raw' ORDER BY timestamp LIMIT 1 OFFSET 2"
        ).fetchone()
        changed = bytearray(blob)
        changed[100] ^= 0x01
        con.execute("UPDATE messages SET data = ? WHERE id = ?", (bytes(changed), rid))
    con.close()
    assert main(["check", str(bag)]) == 2
    line = _one_error_line(capsys)
    assert f"/camera/image_raw {stamp / 1e9:.3f}..{stamp / 1e9:.3f} s: 1 message(s) fail " \
           "their CRC" in line
