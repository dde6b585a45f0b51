"""Approximate-time pairing of an image stream and a point-cloud stream (pure Python).

`message_filters` is not always installed, and its ApproximateTime policy waits for the
optimal pair; an online calibrator wants the newest pair now. Policy:

- Each arriving message is matched with the queued message of the other stream whose stamp
  is closest; if that gap is at most `slop` seconds the pair is returned at once.
- Forming a pair drops every queued message older than the paired one in each stream (they
  can only form older pairs) and the pair itself leaves the queues.
- A message older than (or as old as) its stream's last paired message is dropped on arrival.
  If it is older by more than `reset_after_backwards_s` the clock jumped back (a looping bag,
  a restarted simulation): the queues are cleared and pairing starts afresh.
- Each queue holds at most `queue_size` messages; the oldest is dropped when it overflows.

Every received message ends up paired, dropped or still queued, and the counters say which:
`received_* == paired + dropped_* + queued_*` for each stream (see `counters`). All methods
are thread-safe (image and cloud callbacks may run on different executor threads).
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

# The calibration node's defaults (its sync_slop_s, sync_queue_size parameters): the largest
# |image stamp - cloud stamp| of a pair, seconds, and the unpaired messages kept per stream.
DEFAULT_SLOP_S = 0.05
DEFAULT_QUEUE_SIZE = 10

@dataclass(frozen=True)
class Pair:
    """An image and a cloud whose stamps (seconds) differ by at most the slop."""

    image_stamp: float
    image: Any
    cloud_stamp: float
    cloud: Any

    @property
    def offset(self) -> float:
        """image_stamp - cloud_stamp, seconds."""
        return self.image_stamp - self.cloud_stamp


@dataclass
class SyncCounters:
    """Running counts for diagnostics; received_* == paired + dropped_* + queued_*."""

    received_images: int = 0
    received_clouds: int = 0
    paired: int = 0
    dropped_images: int = 0
    dropped_clouds: int = 0
    queued_images: int = 0
    queued_clouds: int = 0
    clock_resets: int = 0


class _Stream:
    def __init__(self, queue_size: int) -> None:
        self.queue: deque[tuple[float, Any]] = deque()
        self.queue_size = queue_size
        self.last_paired: float | None = None
        self.received = 0
        self.dropped = 0


class ApproximateTimePairer:
    """Pairs images with clouds by stamp; see the module docstring for the policy."""

    def __init__(
        self, slop: float, queue_size: int = 10, reset_after_backwards_s: float = 1.0
    ) -> None:
        """`slop`: largest accepted |image_stamp - cloud_stamp| in seconds (>= 0);
        `queue_size`: unpaired messages kept per stream (>= 1);
        `reset_after_backwards_s`: a stamp this far behind its stream's last pair resets."""
        if not slop >= 0.0 or not math.isfinite(slop):
            raise ValueError(f"slop must be a finite number >= 0 seconds, got {slop}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not reset_after_backwards_s > 0.0:
            raise ValueError(
                f"reset_after_backwards_s must be > 0, got {reset_after_backwards_s}"
            )
        self.slop = float(slop)
        self.queue_size = int(queue_size)
        self.reset_after_backwards_s = float(reset_after_backwards_s)
        self._images = _Stream(self.queue_size)
        self._clouds = _Stream(self.queue_size)
        self._paired = 0
        self._clock_resets = 0
        self._last_unpaired_offset: float | None = None
        self._lock = threading.Lock()

    def push_image(self, stamp: float, item: Any) -> Pair | None:
        """Add an image stamped `stamp` seconds; returns the pair it forms, if any."""
        with self._lock:
            found = self._push(self._images, self._clouds, stamp, item)
        if found is None:
            return None
        (image_stamp, image), (cloud_stamp, cloud) = found
        return Pair(image_stamp, image, cloud_stamp, cloud)

    def push_cloud(self, stamp: float, item: Any) -> Pair | None:
        """Add a cloud stamped `stamp` seconds; returns the pair it forms, if any."""
        with self._lock:
            found = self._push(self._clouds, self._images, stamp, item)
        if found is None:
            return None
        (cloud_stamp, cloud), (image_stamp, image) = found
        return Pair(image_stamp, image, cloud_stamp, cloud)

    @property
    def counters(self) -> SyncCounters:
        """A consistent snapshot of the counters."""
        with self._lock:
            return SyncCounters(
                received_images=self._images.received,
                received_clouds=self._clouds.received,
                paired=self._paired,
                dropped_images=self._images.dropped,
                dropped_clouds=self._clouds.dropped,
                queued_images=len(self._images.queue),
                queued_clouds=len(self._clouds.queue),
                clock_resets=self._clock_resets,
            )

    @property
    def last_unpaired_offset(self) -> float | None:
        """image_stamp - cloud_stamp (seconds) of the closest candidates the last time a
        message found a partner only farther than the slop; None if that never happened
        since the last pair. Meant for a warning such as "stamps differ by 0.31 s"."""
        return self._last_unpaired_offset

    def reset(self) -> None:
        """Forget queued messages (dropped) and the last paired stamps; counters are kept."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        for stream in (self._images, self._clouds):
            stream.dropped += len(stream.queue)
            stream.queue.clear()
            stream.last_paired = None
        self._last_unpaired_offset = None

    def _push(
        self, own: _Stream, other: _Stream, stamp: float, item: Any
    ) -> tuple[tuple[float, Any], tuple[float, Any]] | None:
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"message stamp must be finite seconds, got {stamp}")
        own.received += 1
        if own.last_paired is not None and stamp <= own.last_paired:
            if own.last_paired - stamp > self.reset_after_backwards_s:
                self._clock_resets += 1
                self._reset()
            else:
                own.dropped += 1
                return None
        if not other.queue:
            self._enqueue(own, stamp, item)
            return None
        best = min(range(len(other.queue)), key=lambda i: (abs(other.queue[i][0] - stamp), -i))
        other_stamp, other_item = other.queue[best]
        if abs(other_stamp - stamp) > self.slop:
            sign = 1.0 if own is self._images else -1.0
            self._last_unpaired_offset = sign * (stamp - other_stamp)
            self._enqueue(own, stamp, item)
            return None
        # The new message pairs: drop what precedes it in its own stream and what precedes
        # the partner in the other (queues are sorted by stamp); newer messages stay queued.
        while own.queue and own.queue[0][0] < stamp:
            own.queue.popleft()
            own.dropped += 1
        for _ in range(best + 1):
            other.queue.popleft()
        other.dropped += best
        own.last_paired = stamp
        other.last_paired = other_stamp
        self._paired += 1
        self._last_unpaired_offset = None
        return (stamp, item), (other_stamp, other_item)

    def _enqueue(self, stream: _Stream, stamp: float, item: Any) -> None:
        # Keep the queue sorted by stamp (arrival order is usually, not always, stamp order).
        index = len(stream.queue)
        while index > 0 and stream.queue[index - 1][0] > stamp:
            index -= 1
        stream.queue.insert(index, (stamp, item))
        if len(stream.queue) > stream.queue_size:
            stream.queue.popleft()
            stream.dropped += 1
