"""Property-based fuzzing (hypothesis) of the bag readers: random damage to a bag's bytes.

A bag written by `nclr-bag convert` (sealed with CRCs) that is truncated, has bytes flipped
or overwritten, or a changed metadata.yaml, reads back exactly as it was written or fails
with BagError: never another exception, never other data. A bag without CRCs (recorded
elsewhere: here the same bags with their CRCs removed) may be misread where its format has
no checksum, but still fails only with BagError. Deterministic in CI (tests/conftest.py);
`NCLR_FUZZ_SCALE=20` runs 20 times more examples.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nclr_core.data.rosbag.mcap_integrity import OP_CHUNK, OP_DATA_END
from nclr_core.data.rosbag.messages import BagError, BagTopics
from nclr_core.data.rosbag.reader import BagFrames
from nclr_core.data.rosbag.sqlite_integrity import CRC_TABLE
from nclr_ros.bag_convert import write_bag

SCALE = float(os.environ.get("NCLR_FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=int(120 * SCALE), suppress_health_check=[HealthCheck.too_slow])
KEYS = ("image", "points", "K", "stamp", "camera_stamp", "camera_frame", "lidar_frame",
        "frame_id", "T_cam_lidar")


def _samples(count: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 256, (4, 6, 3), dtype=np.uint8),
             "points": rng.normal(size=(24, 4)).astype(np.float32),
             "K": np.array([[4.0, 0.0, 3.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]]),
             "T_cam_lidar": np.eye(4), "stamp": 2.0 + 0.1 * i, "camera_frame": "cam",
             "lidar_frame": "lidar"} for i in range(count)]


def _unseal(bag: Path) -> None:
    """Remove the CRCs: zero them in an mcap file, drop the table from a .db3."""
    for file in bag.iterdir():
        if file.suffix == ".db3":
            with sqlite3.connect(file) as con:
                con.execute(f"DROP TABLE {CRC_TABLE}")
            con.close()
        elif file.suffix == ".mcap":
            data = bytearray(file.read_bytes())
            pos = 8
            while True:
                op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
                if op == OP_CHUNK:
                    struct.pack_into("<I", data, pos + 9 + 24, 0)
                if op == OP_DATA_END:
                    struct.pack_into("<I", data, pos + 9, 0)
                    break
                pos += 9 + length
            struct.pack_into("<I", data, len(data) - 12, 0)  # the footer's summary CRC
            file.write_bytes(bytes(data))


def _read(bag: Path) -> list[dict]:
    return [{k: s.get(k) for k in KEYS} for s in BagFrames(bag, BagTopics(), slop=0.05)]


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """{name: (bag, what it reads back intact)} for sealed and unsealed sqlite3 and mcap."""
    root = tmp_path_factory.mktemp("fuzz_bags")
    out = {}
    for storage in ("sqlite3", "mcap"):
        sealed = root / storage
        write_bag(_samples(3), sealed, storage=storage)
        unsealed = root / f"{storage}_unsealed"
        shutil.copytree(sealed, unsealed)
        _unseal(unsealed)
        out[storage] = (sealed, _read(sealed))
        out[f"{storage}_unsealed"] = (unsealed, _read(unsealed))
    assert len(out["mcap"][1]) == 3 and _same(out["mcap"][1], out["sqlite3_unsealed"][1])
    return out


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        all(np.array_equal(x[k], y[k]) if isinstance(x[k], np.ndarray) else x[k] == y[k]
            for k in KEYS) for x, y in zip(a, b, strict=True))


damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)),
                                        min_size=1, max_size=6)),
    st.tuples(st.just("overwrite"), st.floats(0.0, 1.0), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("metadata"), st.lists(st.tuples(st.floats(0.0, 1.0),
                                                      st.integers(1, 255)),
                                            min_size=1, max_size=3)),
)


def _damage(bag: Path, how: tuple) -> None:
    kind = how[0]
    target = bag / "metadata.yaml" if kind == "metadata" else next(
        p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    data = bytearray(target.read_bytes())
    at = lambda fraction: min(len(data) - 1, int(fraction * len(data)))  # noqa: E731
    if kind == "truncate":
        data = data[: at(how[1])]
    elif kind == "overwrite":
        start = at(how[1])
        data[start:start + len(how[2])] = how[2]
    else:
        for fraction, mask in how[1]:
            data[at(fraction)] ^= mask
    target.write_bytes(bytes(data))


def _read_damaged(source: Path, how: tuple) -> list[dict] | BagError:
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "bag"
        shutil.copytree(source, bag)
        _damage(bag, how)
        try:
            return _read(bag)
        except BagError as err:
            assert str(bag) in str(err)
            return err


@FUZZ
@given(storage=st.sampled_from(["sqlite3", "mcap"]), how=damage)
def test_a_sealed_bag_reads_back_exactly_or_fails_with_bag_error(bags, storage, how):
    source, intact = bags[storage]
    result = _read_damaged(source, how)
    event(f"{storage}: {'BagError' if isinstance(result, BagError) else 'read intact'}")
    if not isinstance(result, BagError):
        assert _same(result, intact), f"{storage} misread after {how}"


@FUZZ
@given(storage=st.sampled_from(["sqlite3_unsealed", "mcap_unsealed"]), how=damage)
def test_a_bag_without_crcs_fails_only_with_bag_error(bags, storage, how):
    source, intact = bags[storage]
    result = _read_damaged(source, how)
    outcome = ("BagError" if isinstance(result, BagError)
               else "read intact" if _same(result, intact) else "misread (no checksum)")
    event(f"{storage}: {outcome}")
