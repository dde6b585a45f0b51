"""Benchmarks that run on their own (long, or several processes): their JSON results are
recorded in benchmarks/results/ and rendered at the end of BENCHMARKS.md, after the tables
of `benchmarks/run.py`, which keeps them when it regenerates the document."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import _g, _table
from nclr_core.atomic_write import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCUMENT = REPO / "BENCHMARKS.md"
MARK = ("<!-- Recorded runs: rendered from benchmarks/results/*.json by benchmarks/recorded.py "
        "(bench_dds.py, soak_node.py with --update-doc). -->")


def dds_large_clouds(result: dict[str, Any]) -> str:
    rows = [[r["profile"], r["points"], f"{r['bytes'] / 2**20:.1f}", r["published"],
             r["received"], f"{r['delivered_fraction']:.0%}", r["intact"], r["lost_reported"],
             r["lost_warnings"]] for r in result["rows"]]
    largest = result["largest_carried_points"]
    verdict = ("none of the sizes" if largest is None else
               f"{largest} points ({largest * result['bytes_per_point'] / 2**20:.0f} MiB)")
    load = ", ".join(f"{v:.2f}" for v in result["load_average_1_5_15min"])
    return (f"Command: `{result['command']}`. Best effort (sensor-data QoS, keep last 5), "
            f"{result['messages']} clouds per size at {result['rate_hz']:g} Hz between two "
            "processes on this host, x y z intensity float32 (16 bytes a point). Lost = the "
            "subscriber's DDS sample-lost count, as the nodes report it "
            "(`messages_lost.<topic>`), warnings = the nodes' one warning per topic. Load "
            f"average at the end: {load}."
            f"\n\nLargest cloud carried with the profile on both sides (this size and every "
            f"smaller one measured: at least {result['delivered_fraction_required']:.0%} "
            f"delivered intact): {verdict}.\n\n"
            + _table(["profile", "points", "MiB", "published", "received", "delivered",
                      "intact", "lost (event)", "warnings"], rows))


def soak_node(result: dict[str, Any]) -> str:
    samples = result["rss_mib"]
    step = max(1, len(samples) // 12)
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    rows = [[f"{t:.0f}", f"{rss:.1f}", processed] for t, rss, processed in shown]
    verdict = "passed" if result["passed"] else "FAILED"
    return (
        f"Command: `{result['command']}` ({verdict}). {result['description']}\n\n"
        + _table(["duration s", "published", "received", "processed", "dropped (newest-only)",
                  "worker errors", "bad input", "RSS after warm-up MiB", "RSS at end MiB",
                  "growth", "longest gap between processed pairs s"],
                 [[f"{result['duration_s']:.0f}", result["pairs_published"],
                   result["pairs_received"], result["pairs_processed"],
                   result["pairs_dropped"], result["worker_errors"],
                   ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in result["bad_input"].items())
                   or "none",
                   f"{result['rss_after_warmup_mib']:.1f}", f"{result['rss_end_mib']:.1f}",
                   f"{result['growth_fraction']:+.2%}",
                   _g(result["longest_processing_gap_s"])]])
        + f"\nRSS of the node process over time (warm-up: first {result['warmup_s']:.0f} s; "
          f"growth limit {result['growth_limit']:.0%}):\n\n"
        + _table(["t s", "RSS MiB", "pairs processed"], rows))


RENDERERS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "dds_large_clouds": ("Largest best-effort cloud over DDS", dds_large_clouds),
    "soak_node": ("Soak run of the calibration node", soak_node),
}


def recorded_markdown() -> str:
    """The recorded results as markdown sections, after MARK ("" when none is recorded)."""
    parts = []
    for name, (title, render) in RENDERERS.items():
        path = RESULTS / f"{name}.json"
        if path.is_file():
            parts.append(f"## {title}\n\n" + render(json.loads(path.read_text())))
    return MARK + "\n\n" + "\n".join(parts) if parts else ""


def with_recorded(text: str) -> str:
    """`text` (a BENCHMARKS.md) with its recorded sections replaced by the current ones."""
    head = text.split(MARK)[0].rstrip("\n") + "\n"
    recorded = recorded_markdown()
    return head + ("\n" + recorded if recorded else "")


def record(name: str, result: dict[str, Any], out: Path, update_doc: bool) -> None:
    """Write `out/<name>.json`; with `update_doc` also benchmarks/results/ and BENCHMARKS.md."""
    text = json.dumps(result, indent=2) + "\n"
    write_text_atomic(Path(out) / f"{name}.json", text)
    if update_doc:
        write_text_atomic(RESULTS / f"{name}.json", text)
        write_text_atomic(DOCUMENT, with_recorded(DOCUMENT.read_text(encoding="utf-8")))
