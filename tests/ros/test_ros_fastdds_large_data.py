"""config/fastdds_large_data.xml: best-effort 120k-point clouds (~1.9 MB) reach another
process; without it, the clouds lost on the way are reported by the nodes' lost-message
monitor (the DDS sample-lost event), with one warning.

A real publisher process and a real subscriber process talk over Fast DDS on this host
(`benchmarks/bench_dds.py`, which also measures the largest cloud the profile carries).
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.bench_dds import PROFILE, run_pair  # noqa: E402

POINTS = 120_000
MESSAGES = 30
MIN_DELIVERED_FRACTION = 0.75


def test_profile_is_wellformed_fastdds_xml():
    root = ET.parse(PROFILE).getroot()
    ns = {"d": "http://www.eprosima.com"}
    segment = root.find(".//d:transport_descriptor[d:type='SHM']/d:segment_size", ns)
    assert int(segment.text) == 64 * 1024 * 1024
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = {e.text for e in participant.findall(".//d:userTransports/d:transport_id", ns)}
    declared = {e.text for e in root.findall(".//d:transport_descriptor/d:transport_id", ns)}
    assert used == declared and len(used) == 2


@pytest.mark.slow
def test_large_best_effort_clouds_arrive_with_profile():
    pytest.importorskip("rmw_fastrtps_cpp", reason="rmw_fastrtps_cpp is not installed")
    report = run_pair(POINTS, MESSAGES, PROFILE)
    assert report["bytes"] > 1_800_000
    assert report["intact"]
    assert report["received"] >= MIN_DELIVERED_FRACTION * report["published"], report


@pytest.mark.slow
def test_clouds_lost_without_the_profile_are_counted_and_warned_about_once():
    pytest.importorskip("rmw_fastrtps_cpp", reason="rmw_fastrtps_cpp is not installed")
    report = run_pair(POINTS, MESSAGES, None)
    lost = report["published"] - report["received"]
    assert lost > 0, f"Fast DDS's defaults delivered every 1.9 MB cloud: {report}"
    assert 0 < report["lost_reported"] <= lost, report
    assert report["lost_warnings"] == 1
