"""Diagnosis of the first break in the referral log's chain: removed, changed, inserted or
reordered, and which event, from the row that does not continue the verified chain and its
neighbours (reads only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from smartapp.audit import rows as stored
from smartapp.audit.canonical import GENESIS, event_hash
from smartapp.audit.findings import Break, span
from smartapp.audit.models import LogEvent
from smartapp.audit.rows import StoredEvent

# How far a moved event is looked for (both ways) when its own hash fails at its seq.
SEARCH = 256


def row_hash(row: StoredEvent, seq: int | None = None) -> str | None:
    """The row's hash (as if at `seq`), None for a row that cannot be read."""
    return None if row.broken else event_hash(row, seq)


def unreadable(row: StoredEvent) -> Break:
    return Break(
        "corrupt",
        row.seq,
        row.type,
        f"event #{row.seq} ({row.type}) cannot be read: {row.defect} (the row was damaged or "
        "altered in the database)",
    )


def diagnose(
    session: Session,
    row: Any,
    k: int,
    prev_hash: str,
    prev_type: str | None,
    peek: Callable[[], Any],
) -> Break:
    """Name what happened at the first row that does not continue the verified chain."""
    if row.seq > k:
        return Break(
            "removed",
            k,
            None,
            f"{span(k, row.seq - 1)} removed: the sequence jumps from #{k - 1} to "
            f"#{row.seq} ({row.type})",
        )
    if row.broken:
        return unreadable(row)
    if event_hash(row) == row.hash:
        return _broken_link(session, row, k, prev_type)
    origin = _original_seq(session, row, k)
    if origin is None:
        following = peek()
        if (
            following is not None
            and following.prev_hash == prev_hash
            and row_hash(following, seq=k) == following.hash
        ):
            return Break(
                "inserted",
                k,
                row.type,
                f"event #{k} ({row.type}) was inserted: the next one, #{following.seq} "
                f"({following.type}), is the original #{k} renumbered",
            )
        return Break(
            "changed",
            k,
            row.type,
            f"event #{k} ({row.type}) was changed: its content no longer matches its hash",
        )
    if origin < k:
        first_type = _type_at(session, origin)
        return Break(
            "inserted",
            origin,
            first_type,
            f"{_inserted(origin, k - 1, first_type)}: #{k} ({row.type}) is the original "
            f"#{origin}, renumbered",
        )
    moved = _original_elsewhere(session, prev_hash, k)
    if moved is not None:
        return Break(
            "reordered",
            k,
            row.type,
            f"events reordered: #{k} now holds the original #{origin} ({row.type}); the "
            f"original #{k} ({moved.type}) is now at #{moved.seq}",
        )
    return Break(
        "removed",
        k,
        None,
        f"{span(k, origin - 1)} removed and the later events renumbered: #{k} "
        f"({row.type}) is the original #{origin}",
    )


def _broken_link(session: Session, row: Any, k: int, prev_type: str | None) -> Break:
    """A row that is sound in itself but does not follow the previous one."""
    pred = _by_hash(session, row.prev_hash)
    if pred is not None and pred.seq < k - 1:
        first_type = _type_at(session, pred.seq + 1)
        return Break(
            "inserted",
            pred.seq + 1,
            first_type,
            f"{_inserted(pred.seq + 1, k - 1, first_type)}: #{k} ({row.type}) chains to "
            f"#{pred.seq}",
        )
    if pred is not None and pred.seq > k:
        return Break(
            "reordered",
            k,
            row.type,
            f"event #{k} ({row.type}) is out of order: it chains to #{pred.seq} ({pred.type}), "
            "which comes after it",
        )
    before = f"#{k - 1} ({prev_type})" if k > 1 else "the genesis value"
    return Break(
        "inserted-or-reordered",
        k,
        row.type,
        f"event #{k} ({row.type}) has a valid hash of its own but does not chain to {before}: "
        "an event was inserted or the order changed here (or one of the two was rewritten "
        "with a recomputed hash)",
    )


def _inserted(first: int, last: int, first_type: str | None) -> str:
    if first == last:
        return f"event #{first} ({first_type}) was inserted"
    return f"events #{first}..#{last} were inserted (the first: {first_type})"


def _original_seq(session: Session, row: Any, k: int) -> int | None:
    """The seq at which this row's content hashes to its stored hash, if it moved."""
    candidates = []
    if row.prev_hash == GENESIS:
        candidates.append(1)
    pred = _by_hash(session, row.prev_hash)
    if pred is not None:
        candidates.append(pred.seq + 1)
    for distance in range(1, SEARCH + 1):
        candidates.extend((k + distance, k - distance))
    for seq in candidates:
        if seq >= 1 and seq != k and event_hash(row, seq=seq) == row.hash:
            return seq
    return None


def _original_elsewhere(session: Session, prev_hash: str, k: int) -> Any | None:
    """The row that was at `k` (it chains to the hash before `k`), now at another seq."""
    rows = stored.read(
        session, stored.select_events(LogEvent.prev_hash == prev_hash, LogEvent.seq != k)
    )
    return next((r for r in rows if row_hash(r, seq=k) == r.hash), None)


def _by_hash(session: Session, hash_: str) -> Any | None:
    return next(stored.read(session, stored.select_events(LogEvent.hash == hash_).limit(1)), None)


def _type_at(session: Session, seq: int) -> str | None:
    return session.scalar(select(LogEvent.type).where(LogEvent.seq == seq))
