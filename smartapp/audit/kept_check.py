"""The log against the checkpoints an auditor kept outside the database (`smartapp.audit.kept`):
each kept checkpoint must be genuine (signed by a key given), in the database as kept, and the
event at its seq must still hash to it; the log must reach the last one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from smartapp.audit.checkpoint_check import AtCheckpoint, keys_by_id, payload
from smartapp.audit.findings import Break, Report, span
from smartapp.audit.kept import KeptCheckpoint
from smartapp.audit.signing import verify_signature


def _where(cp: KeptCheckpoint) -> str:
    return f"kept checkpoint #{cp.seq} (line {cp.line})"


def _genuine(cp: KeptCheckpoint, keys: Mapping[str, Ed25519PublicKey]) -> bool:
    key = keys.get(cp.key_id)
    return key is not None and verify_signature(key, payload(cp), cp.signature)


def _not_genuine(cp: KeptCheckpoint) -> Break:
    return Break(
        "kept",
        cp.seq,
        None,
        f"{_where(cp)} is not signed by a key given: the kept file was altered, or "
        "verify with the key that signed it",
    )


def _database_break(
    cp: KeptCheckpoint, stored_cp: Any | None, report: Report, walked_to_end: bool
) -> Break | None:
    """A kept checkpoint removed from the database, or replaced there by another."""
    if stored_cp is None and walked_to_end and cp.seq > report.head_seq:
        return None  # its events are gone too: one "removed" finding says both
    if stored_cp is None:
        return Break(
            "checkpoint",
            cp.seq,
            None,
            f"checkpoint #{cp.seq} was removed from the database ({_where(cp)} has it)",
        )
    if not cp.same_as(stored_cp):
        return Break(
            "checkpoint",
            cp.seq,
            None,
            f"checkpoint #{cp.seq} in the database is not the one kept ({_where(cp)}): "
            "replaced or re-signed",
        )
    return None


def _rewritten(cp: KeptCheckpoint, found: str, type_: str, last_good: int) -> Break:
    return Break(
        "rewritten",
        last_good + 1,
        None,
        f"history rewritten before {_where(cp)}: event #{cp.seq} ({type_}) now hashes to "
        f"{found[:16]}..., the kept checkpoint says {cp.hash[:16]}...; the change "
        f"lies within #{last_good + 1}..#{cp.seq}",
    )


def _removed(last: KeptCheckpoint, head_seq: int, in_database: Mapping[int, Any]) -> Break:
    """The log ends before the last genuine kept checkpoint."""
    return Break(
        "removed",
        head_seq + 1,
        None,
        f"{span(head_seq + 1, last.seq)} removed: the log ends at "
        f"#{head_seq}, but kept checkpoint #{last.seq} (line {last.line}) signed "
        f"#{last.seq}"
        + ("" if last.seq in in_database else "; that checkpoint is gone from it too"),
    )


def check_kept(
    report: Report,
    kept: Sequence[KeptCheckpoint],
    checkpoints: Sequence[Any],
    public_keys: Sequence[Ed25519PublicKey],
    at_checkpoint: AtCheckpoint,
    walked_to_end: bool,
) -> None:
    """The log against the checkpoints kept outside it: each must be genuine (signed by a key
    given), in the database as kept, and the event at its seq must still hash to it. Stops at
    the first rewrite; sets `report.last_kept` to the last kept checkpoint that matches."""
    keys = keys_by_id(public_keys)
    in_database = {c.seq: c for c in checkpoints}
    last_good, genuine = 0, []
    for cp in kept:
        if not _genuine(cp, keys):
            report.breaks.append(_not_genuine(cp))
            continue
        genuine.append(cp)
        found_break = _database_break(cp, in_database.get(cp.seq), report, walked_to_end)
        if found_break is not None:
            report.breaks.append(found_break)
        if cp.seq in at_checkpoint:
            found, type_ = at_checkpoint[cp.seq]
            if found != cp.hash:
                report.breaks.append(_rewritten(cp, found, type_, last_good))
                return
            last_good = report.last_kept = cp.seq
    beyond = [cp for cp in genuine if cp.seq > report.head_seq]
    if walked_to_end and beyond:
        report.breaks.append(_removed(beyond[-1], report.head_seq, in_database))
