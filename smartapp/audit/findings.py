"""What verifying the referral log finds: a `Break` per finding and the `Report` of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

from smartapp.audit import coverage
from smartapp.audit.canonical import GENESIS


@dataclass(frozen=True)
class Break:
    """One finding: what happened, to which event (first affected seq), in words."""

    # changed | removed | inserted | reordered | inserted-or-reordered | rewritten | checkpoint
    # | unsigned | corrupt (a row that cannot be read: data not JSON, time not a time) | kept
    # (a kept checkpoint that is not genuine) | coverage (the log disagrees with the tables)
    kind: str
    seq: int
    type: str | None
    message: str


@dataclass
class Report:
    events: int = 0
    checkpoints: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    last_checkpoint: int = 0
    last_kept: int = 0  # the last checkpoint kept off the box that was checked, if any
    breaks: list[Break] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first(self) -> Break | None:
        """The first break in the chain; else the first disagreement with the tables."""
        chain = [b for b in self.breaks if b.kind != coverage.KIND]
        if chain:
            return min(chain, key=lambda b: b.seq)
        return self.breaks[0] if self.breaks else None

    def summary(self) -> str:
        """The one line the CLI prints."""
        if self.ok:
            kept = f", matches kept checkpoint #{self.last_kept}" if self.last_kept else ""
            return (
                f"OK: {self.events} events, {self.checkpoints} checkpoints, "
                f"head #{self.head_seq} {self.head_hash}{kept}"
            )
        first = self.first
        assert first is not None
        if first.kind == coverage.KIND:
            return f"BROKEN: the log does not cover the referral tables: {first.message}"
        named = f" ({first.type})" if first.type else ""
        return f"BROKEN at #{first.seq}{named}: {first.message}"


def span(first: int, last: int) -> str:
    """ "event #7" or "events #7..#9"."""
    return f"event #{first}" if first == last else f"events #{first}..#{last}"
