"""What an integrity check of a bag found: the damaged parts, located by topic and time."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nclr_core.data.rosbag.messages import BagError, ns_to_seconds

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

