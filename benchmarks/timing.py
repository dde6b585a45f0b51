"""Timing and memory helpers of the benchmarks: medians after warm-up, peak memory.

Wall-clock times come from `time.perf_counter`; on CUDA the device is synchronised before
each clock read. Peak CPU memory is the process's resident-set high-water mark (`VmHWM`),
reset before the measured code where the kernel allows it (`/proc/self/clear_refs`), else
the lifetime peak from `resource.getrusage`; on CUDA also `torch.cuda.max_memory_allocated`.
"""
from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued CUDA work on `device` (no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device | str | None = None) -> float:
    """perf_counter seconds after synchronising `device`."""
    synchronize(device)
    return time.perf_counter()


@dataclass(frozen=True)
class Timing:
    """Seconds of the measured repeats (warm-up excluded)."""

    times_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "min_s": self.min_s, "repeats": len(self.times_s)}


def measure(fn: Callable[[], Any], repeats: int, warmup: int = 1,
            device: torch.device | str | None = None) -> Timing:
    """Run `fn` `warmup` times untimed, then `repeats` times timed."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = now(device)
        fn()
        times.append(now(device) - t0)
    return Timing(tuple(times))


def median_of(samples: list[dict[str, float]]) -> dict[str, float]:
    """Per-key median of a list of dicts with the same keys (e.g. per-stage seconds)."""
    if not samples:
        raise ValueError("median_of needs at least one sample")
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:  # no /proc: lifetime peak (ru_maxrss is KiB on Linux)
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0


class PeakMemory:
    """Context manager: peak memory of the code inside it.

    After exit, `result()` gives `peak_rss_mib` (resident set high-water mark),
    `rss_start_mib` (resident set at entry), `peak_rss_increase_mib` and `peak_rss_scope`
    ("block" when the mark was reset at entry, else "process lifetime"); on CUDA devices
    also `cuda_peak_allocated_mib`.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self._result: dict[str, Any] = {}

    def __enter__(self) -> PeakMemory:
        self._scoped = _reset_peak_rss()
        rss = _status_kib("VmRSS")
        self._start = rss / 1024.0 if rss is not None else float("nan")
        if self.device is not None and self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _peak_rss_mib()
        self._result = {
            "peak_rss_mib": peak,
            "rss_start_mib": self._start,
            "peak_rss_increase_mib": peak - self._start,
            "peak_rss_scope": "block" if self._scoped else "process lifetime",
        }
        if self.device is not None and self.device.type == "cuda":
            synchronize(self.device)
            self._result["cuda_peak_allocated_mib"] = (
                torch.cuda.max_memory_allocated(self.device) / 2**20)

    def result(self) -> dict[str, Any]:
        if not self._result:
            raise RuntimeError("PeakMemory.result() before the block ended")
        return dict(self._result)
