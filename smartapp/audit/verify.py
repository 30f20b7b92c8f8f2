"""Verification of the referral log: every hash, every link, every checkpoint signature.

Reads only; needs only the database and the public key(s). Reports the FIRST event that was
changed, removed, inserted or reordered, by sequence number and type, and how:

- seq gap                                  -> removed
- own hash does not match                  -> changed; or, when the row hashes correctly at
                                              another seq, moved: inserted before it (it
                                              belongs earlier), removed (it belongs later and
                                              the original is gone) or reordered (it belongs
                                              later and the original sits elsewhere)
- own hash fine but prev_hash is not the   -> inserted / reordered (or the neighbour rewritten
  previous event's hash                       with a recomputed hash)
- a checkpoint whose signed hash differs   -> history rewritten before that checkpoint (even if
  from the event's hash at that seq           every hash after the change was recomputed)
- a signature that does not verify, a      -> checkpoint forged, altered or removed
  checkpoint chained past a missing one
- `max_unsigned` or more events after the  -> checkpoints removed (all of them, or the last
  last checkpoint                             ones) so that a rewrite would go unseen: the app
                                              signs whenever `every` events are unsigned

What a hash chain cannot show: events appended after the last checkpoint can be dropped or
forged by someone with write access to the database; only the signed prefix is proven, and only
as far as the checkpoints are still there. Two more checks close that window:

- kept checkpoints (`kept`, `smartapp.audit.kept`: a file the auditor keeps off the box): the
  log must reach the last kept checkpoint and hash to it there (so every event up to it is
  present and unchanged), and the database's checkpoints must be the kept ones;
- the cross-check (`cross_check`, `smartapp.audit.coverage`): the referral and coach tables
  must agree with the log that should cover them.

Layout: this module walks the chain; `findings` holds `Break` and `Report`, `diagnose` names
the first break, `checkpoint_check` and `kept_check` check the stored and the kept checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from smartapp.audit import coverage, fastrows
from smartapp.audit import rows as stored
from smartapp.audit.canonical import GENESIS
from smartapp.audit.chain import DEFAULT_EVERY
from smartapp.audit.checkpoint_check import check_checkpoints
from smartapp.audit.diagnose import diagnose, row_hash, unreadable
from smartapp.audit.findings import Break, Report, span
from smartapp.audit.kept import KeptCheckpoint
from smartapp.audit.kept_check import check_kept
from smartapp.audit.models import LogCheckpoint, LogEvent
from smartapp.audit.rows import StoredEvent

__all__ = ["Break", "Report", "schema_problem", "verify"]


def schema_problem(session: Session) -> str | None:
    """Why this database cannot hold a chained log (missing tables or columns), or None."""
    inspector = inspect(session.connection())
    for table, needed in (
        ("log_event", {c.name for c in LogEvent.__table__.columns}),
        ("log_checkpoint", {c.name for c in LogCheckpoint.__table__.columns}),
    ):
        if not inspector.has_table(table):
            return f"no {table} table in this database"
        missing = needed - {c["name"] for c in inspector.get_columns(table)}
        if missing:
            return f"{table} lacks {', '.join(sorted(missing))}: a log from before the hash chain"
    return None


def verify(
    session: Session,
    public_keys: Sequence[Ed25519PublicKey] = (),
    max_unsigned: int | None = DEFAULT_EVERY,
    kept: Sequence[KeptCheckpoint] = (),
    cross_check: bool = False,
    since: tuple[int, str, int] | None = None,
) -> Report:
    """Recompute the chain and check every checkpoint against it and against the keys.

    `max_unsigned`: how many events may follow the last checkpoint (the app's checkpoint
    interval); None to allow any number (a log written without a signing key). `kept`: the
    checkpoints an auditor kept outside the database. `cross_check`: compare the log with the
    referral and coach tables (`smartapp.audit.coverage`). `since`: (seq, hash, checkpoint seq)
    an earlier verification reached: only what follows is checked (`smartapp.audit.incremental`
    says when that is sound).
    """
    report = Report()
    seq, head, after = since or (0, GENESIS, 0)
    checkpoints = _readable_checkpoints(session, report, after)
    kept = [k for k in kept if k.seq > after]
    wanted = {c.seq for c in checkpoints} | {k.seq for k in kept}
    walk = _walk(session, report, wanted, (seq, head))
    if since:
        report.events += seq
        report.last_checkpoint = after
        report.checkpoints = stored.checkpoint_count(session)
    check_checkpoints(report, checkpoints, public_keys, walk.at_checkpoint, walk.to_end, after)
    check_kept(report, kept, checkpoints, public_keys, walk.at_checkpoint, walk.to_end)
    if cross_check:
        findings, note = coverage.check(session)
        report.breaks.extend(Break(coverage.KIND, f.seq or 0, None, f.message) for f in findings)
        if note:
            report.warnings.append(note)
    _check_unsigned(report, max_unsigned)
    return report


def _readable_checkpoints(session: Session, report: Report, after: int = 0) -> list[Any]:
    """The stored checkpoints after `after` that can be read; a damaged one is a "corrupt"
    break."""
    checkpoints: list[Any] = []
    for cp in stored.checkpoints(session, after):
        if cp.defect:
            report.breaks.append(
                Break(
                    "corrupt",
                    cp.prev_seq + 1,
                    None,
                    f"checkpoint #{cp.seq} cannot be read: {cp.defect}; events "
                    f"#{cp.prev_seq + 1}..#{cp.seq} are not proven by it",
                )
            )
        else:
            checkpoints.append(cp)
    report.checkpoints = len(checkpoints)
    return checkpoints


@dataclass
class _Walk:
    """What the chain walk found: the hash and type at each wanted seq, and whether it reached
    the end of the log without a break."""

    at_checkpoint: dict[int, tuple[str, str]] = field(default_factory=dict)
    to_end: bool = True


def _walk(
    session: Session, report: Report, wanted: set[int], start: tuple[int, str] = (0, GENESIS)
) -> _Walk:
    """Walk the log in seq order from after `start` (seq, hash: where an earlier verification
    stopped) recomputing every hash and link; stop at the first row that does not continue the
    chain (diagnosed as a break). Sets the report's event count and head.

    Fast (`fastrows`) while each row proves itself; from the first row that does not (damaged,
    tampered, or printed otherwise than orjson prints it), the exact path takes over."""
    walk = _Walk()
    expected, prev_hash = start[0] + 1, start[1]
    prev_type: str | None = None
    connection = session.connection()
    dialect = connection.dialect.name
    handover = False
    for raw in fastrows.stream(connection, fastrows.query(dialect, LogEvent.seq > start[0])):
        if raw[0] != expected or raw[8] != prev_hash or fastrows.proven(raw) is None:
            handover = True
            break
        if raw[0] in wanted:
            walk.at_checkpoint[raw[0]] = (raw[9], raw[2])
        report.events += 1
        prev_hash, prev_type, expected = raw[9], raw[2], expected + 1
    if handover:
        _walk_exact(session, report, wanted, walk, (expected, prev_hash, prev_type))
    else:
        report.head_seq, report.head_hash = expected - 1, prev_hash
    return walk


def _walk_exact(
    session: Session,
    report: Report,
    wanted: set[int],
    walk: _Walk,
    state: tuple[int, str, str | None],
) -> None:
    """The exact walk (`rows`, `canonical`, `diagnose`) from `state` (expected seq, previous
    hash, previous type) to the end or the first break."""
    expected, prev_hash, prev_type = state
    query = stored.select_events(LogEvent.seq >= expected - 1).order_by(LogEvent.seq)
    rows: Iterator[StoredEvent] = iter(stored.read(session, query, 2000))
    for row in rows:
        if row.seq == expected - 1:
            continue  # the previous event, read only for `diagnose`'s neighbours
        if row.broken and row.seq == expected:
            report.breaks.append(unreadable(row))
            walk.to_end = False
            break
        if row.seq != expected or row.prev_hash != prev_hash or row_hash(row) != row.hash:
            report.breaks.append(
                diagnose(session, row, expected, prev_hash, prev_type, lambda: next(rows, None))
            )
            walk.to_end = False
            break
        if row.seq in wanted:
            walk.at_checkpoint[row.seq] = (row.hash, row.type)
        report.events += 1
        prev_hash, prev_type, expected = row.hash, row.type, expected + 1
    report.head_seq, report.head_hash = expected - 1, prev_hash


def _check_unsigned(report: Report, max_unsigned: int | None) -> None:
    """Too many events after the last checkpoint is a break (checkpoints removed, or no key);
    a few is a warning (not signed yet)."""
    unsigned = report.head_seq - report.last_checkpoint
    if report.ok and max_unsigned is not None and unsigned >= max_unsigned:
        report.breaks.append(
            Break(
                "unsigned",
                report.last_checkpoint + 1,
                None,
                f"{unsigned} events follow the last checkpoint (#{report.last_checkpoint}); "
                "the app "
                f"signs every {max_unsigned}: checkpoints were removed (a rewrite of these events "
                "would go unseen), or the log was written without a signing key",
            )
        )
    elif report.ok and unsigned:
        report.warnings.append(
            f"{unsigned} event(s) after the last checkpoint "
            f"({span(report.last_checkpoint + 1, report.head_seq)}) not signed yet"
        )
