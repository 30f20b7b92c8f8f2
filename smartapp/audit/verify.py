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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from smartapp.audit import coverage
from smartapp.audit import rows as stored
from smartapp.audit.canonical import GENESIS, checkpoint_payload, event_hash
from smartapp.audit.chain import DEFAULT_EVERY
from smartapp.audit.kept import KeptCheckpoint
from smartapp.audit.models import LogCheckpoint, LogEvent
from smartapp.audit.rows import StoredEvent
from smartapp.audit.signing import key_id, verify_signature

# How far a moved event is looked for (both ways) when its own hash fails at its seq.
SEARCH = 256


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
) -> Report:
    """Recompute the chain and check every checkpoint against it and against the keys.

    `max_unsigned`: how many events may follow the last checkpoint (the app's checkpoint
    interval); None to allow any number (a log written without a signing key). `kept`: the
    checkpoints an auditor kept outside the database. `cross_check`: compare the log with the
    referral and coach tables (`smartapp.audit.coverage`).
    """
    report = Report()
    checkpoints: list[Any] = []
    for cp in stored.checkpoints(session):
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
    wanted = {c.seq for c in checkpoints} | {k.seq for k in kept}
    at_checkpoint: dict[int, tuple[str, str]] = {}  # seq -> (hash, type), as walked

    rows = iter(stored.read(session, stored.select_events().order_by(LogEvent.seq), 2000))
    expected, prev_hash, prev_type = 1, GENESIS, None
    walked_to_end = True
    for row in rows:
        if row.broken and row.seq == expected:
            report.breaks.append(_unreadable(row))
            walked_to_end = False
            break
        if row.seq != expected or row.prev_hash != prev_hash or _hash(row) != row.hash:
            report.breaks.append(
                _diagnose(session, row, expected, prev_hash, prev_type, lambda: next(rows, None))
            )
            walked_to_end = False
            break
        if row.seq in wanted:
            at_checkpoint[row.seq] = (row.hash, row.type)
        report.events += 1
        prev_hash, prev_type, expected = row.hash, row.type, expected + 1
    report.head_seq, report.head_hash = expected - 1, prev_hash

    _check_checkpoints(report, checkpoints, public_keys, at_checkpoint, walked_to_end)
    _check_kept(report, kept, checkpoints, public_keys, at_checkpoint, walked_to_end)
    if cross_check:
        findings, note = coverage.check(session)
        report.breaks.extend(Break(coverage.KIND, f.seq or 0, None, f.message) for f in findings)
        if note:
            report.warnings.append(note)
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
            f"({_span(report.last_checkpoint + 1, report.head_seq)}) not signed yet"
        )
    return report


def _check_checkpoints(
    report: Report,
    checkpoints: Iterable[LogCheckpoint],
    public_keys: Sequence[Ed25519PublicKey],
    at_checkpoint: dict[int, tuple[str, str]],
    walked_to_end: bool,
) -> None:
    keys = {key_id(k): k for k in public_keys}
    previous, last_good, rewritten = 0, 0, False
    for cp in checkpoints:
        key = keys.get(cp.key_id)
        payload = checkpoint_payload(
            seq=cp.seq, hash_=cp.hash, at=cp.at, prev_seq=cp.prev_seq, key_id=cp.key_id
        )
        if key is None:
            given = ", ".join(sorted(keys)) or "none"
            report.breaks.append(
                Break(
                    "checkpoint",
                    cp.seq,
                    None,
                    f"checkpoint #{cp.seq} is signed by key {cp.key_id}, not by a key given "
                    f"({given}): forged, or verify with that key's public half",
                )
            )
        elif not verify_signature(key, payload, cp.signature):
            report.breaks.append(
                Break(
                    "checkpoint",
                    cp.seq,
                    None,
                    f"checkpoint #{cp.seq}: the signature does not verify (checkpoint altered or "
                    "forged)",
                )
            )
        if (cp.prev_seq or 0) != previous:
            report.breaks.append(
                Break(
                    "checkpoint",
                    previous + 1,
                    None,
                    f"checkpoint #{cp.seq} follows checkpoint #{cp.prev_seq}, which is missing: "
                    f"signed checkpoints after #{previous} were removed",
                )
            )
        previous = cp.seq
        if cp.seq in at_checkpoint:
            found, type_ = at_checkpoint[cp.seq]
            if found == cp.hash:
                if not rewritten:
                    last_good = cp.seq
                    report.last_checkpoint = cp.seq
            elif not rewritten:
                rewritten = True
                report.breaks.append(
                    Break(
                        "rewritten",
                        last_good + 1,
                        None,
                        f"history rewritten before checkpoint #{cp.seq}: event #{cp.seq} ({type_}) "
                        f"now hashes to {found[:16]}..., the signed checkpoint says "
                        f"{cp.hash[:16]}...; the change lies within #{last_good + 1}..#{cp.seq}"
                        + (f" (checkpoint #{last_good} still matches)" if last_good else ""),
                    )
                )
        elif walked_to_end and cp.seq > report.head_seq:
            report.breaks.append(
                Break(
                    "removed",
                    report.head_seq + 1,
                    None,
                    f"{_span(report.head_seq + 1, cp.seq)} removed: checkpoint #{cp.seq} "
                    f"signed a head that is no longer in the log (it ends at #{report.head_seq})",
                )
            )


def _check_kept(
    report: Report,
    kept: Sequence[KeptCheckpoint],
    checkpoints: Sequence[LogCheckpoint],
    public_keys: Sequence[Ed25519PublicKey],
    at_checkpoint: dict[int, tuple[str, str]],
    walked_to_end: bool,
) -> None:
    """The log against the checkpoints kept outside it: each must be genuine (signed by a key
    given), in the database as kept, and the event at its seq must still hash to it."""
    keys = {key_id(k): k for k in public_keys}
    in_database = {c.seq: c for c in checkpoints}
    last_good, genuine = 0, []
    for cp in kept:
        where = f"kept checkpoint #{cp.seq} (line {cp.line})"
        key = keys.get(cp.key_id)
        payload = checkpoint_payload(
            seq=cp.seq, hash_=cp.hash, at=cp.at, prev_seq=cp.prev_seq, key_id=cp.key_id
        )
        if key is None or not verify_signature(key, payload, cp.signature):
            report.breaks.append(
                Break(
                    "kept",
                    cp.seq,
                    None,
                    f"{where} is not signed by a key given: the kept file was altered, or "
                    "verify with the key that signed it",
                )
            )
            continue
        genuine.append(cp)
        stored_cp = in_database.get(cp.seq)
        if stored_cp is None and walked_to_end and cp.seq > report.head_seq:
            pass  # its events are gone too: one "removed" finding below says both
        elif stored_cp is None:
            report.breaks.append(
                Break(
                    "checkpoint",
                    cp.seq,
                    None,
                    f"checkpoint #{cp.seq} was removed from the database ({where} has it)",
                )
            )
        elif not cp.same_as(stored_cp):
            report.breaks.append(
                Break(
                    "checkpoint",
                    cp.seq,
                    None,
                    f"checkpoint #{cp.seq} in the database is not the one kept ({where}): "
                    "replaced or re-signed",
                )
            )
        if cp.seq in at_checkpoint:
            found, type_ = at_checkpoint[cp.seq]
            if found == cp.hash:
                last_good = report.last_kept = cp.seq
                continue
            report.breaks.append(
                Break(
                    "rewritten",
                    last_good + 1,
                    None,
                    f"history rewritten before {where}: event #{cp.seq} ({type_}) now hashes to "
                    f"{found[:16]}..., the kept checkpoint says {cp.hash[:16]}...; the change "
                    f"lies within #{last_good + 1}..#{cp.seq}",
                )
            )
            return
    beyond = [cp for cp in genuine if cp.seq > report.head_seq]
    if walked_to_end and beyond:
        last = beyond[-1]
        report.breaks.append(
            Break(
                "removed",
                report.head_seq + 1,
                None,
                f"{_span(report.head_seq + 1, last.seq)} removed: the log ends at "
                f"#{report.head_seq}, but kept checkpoint #{last.seq} (line {last.line}) signed "
                f"#{last.seq}"
                + ("" if last.seq in in_database else "; that checkpoint is gone from it too"),
            )
        )


# -- diagnosis of the first break --------------------------------------------------------------


def _hash(row: StoredEvent, seq: int | None = None) -> str | None:
    """The row's hash (as if at `seq`), None for a row that cannot be read."""
    return None if row.broken else event_hash(row, seq)


def _unreadable(row: StoredEvent) -> Break:
    return Break(
        "corrupt",
        row.seq,
        row.type,
        f"event #{row.seq} ({row.type}) cannot be read: {row.defect} (the row was damaged or "
        "altered in the database)",
    )


def _diagnose(
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
            f"{_span(k, row.seq - 1)} removed: the sequence jumps from #{k - 1} to "
            f"#{row.seq} ({row.type})",
        )
    if row.broken:
        return _unreadable(row)
    if event_hash(row) == row.hash:
        return _broken_link(session, row, k, prev_type)
    origin = _original_seq(session, row, k)
    if origin is None:
        following = peek()
        if (
            following is not None
            and following.prev_hash == prev_hash
            and _hash(following, seq=k) == following.hash
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
        f"{_span(k, origin - 1)} removed and the later events renumbered: #{k} "
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


def _span(first: int, last: int) -> str:
    """ "event #7" or "events #7..#9"."""
    return f"event #{first}" if first == last else f"events #{first}..#{last}"


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
    return next((r for r in rows if _hash(r, seq=k) == r.hash), None)


def _by_hash(session: Session, hash_: str) -> Any | None:
    return next(stored.read(session, stored.select_events(LogEvent.hash == hash_).limit(1)), None)


def _type_at(session: Session, seq: int) -> str | None:
    return session.scalar(select(LogEvent.type).where(LogEvent.seq == seq))
