"""The referral log's chain status as the console shows it (Flask-free): verify the log with the
checkpoint key, against the checkpoints kept in AUDIT_CHECKPOINT_SINK when readable; on a page
view only what follows the last verified head (`smartapp.audit.incremental`), the whole log on
demand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from smartapp.audit import kept
from smartapp.audit.incremental import Verified, verify_everything, verify_since_last
from smartapp.audit.kept import KeptCheckpoint, KeptCheckpointError
from smartapp.audit.verify import Report


def chain_status(
    session: Session,
    public_keys: Sequence[Ed25519PublicKey],
    every: int,
    sink: str | Path | None,
    *,
    full: bool = False,
) -> Verified:
    """Verify the log with `public_keys` (from the last verified head on, or all of it when
    `full` or when that is not sound), and against the checkpoints kept in `sink` when there is
    one and it can be read (else a warning)."""
    held, note = kept_checkpoints(sink)
    if full:
        found = verify_everything(session, list(public_keys), every, held, reason="asked for")
    else:
        found = verify_since_last(session, list(public_keys), every, held)
    if note:
        found.report.warnings.append(note)
    return found


def chain_report(
    session: Session,
    public_keys: Sequence[Ed25519PublicKey],
    every: int,
    sink: str | Path | None,
) -> Report:
    """The report of `chain_status` (incremental)."""
    return chain_status(session, public_keys, every, sink).report


def kept_checkpoints(sink: str | Path | None) -> tuple[list[KeptCheckpoint], str | None]:
    """The sink's kept checkpoints, if there is a sink and it can be read (else a note why)."""
    if not sink or not Path(sink).exists():
        return [], None
    try:
        return kept.read(sink), None
    except KeptCheckpointError as exc:
        return [], f"kept checkpoints not checked: {exc}"


def verified_through(report: Report, seq: int) -> bool:
    """Whether the chain verifies from the first event up to and including `seq`."""
    first = report.first
    return seq <= report.head_seq and (first is None or first.seq > seq)
