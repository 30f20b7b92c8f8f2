"""The referral log's chain status as the console shows it (Flask-free): verify the whole log
with the checkpoint key, against the checkpoints kept in AUDIT_CHECKPOINT_SINK when readable."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from smartapp.audit import kept
from smartapp.audit.kept import KeptCheckpoint, KeptCheckpointError
from smartapp.audit.verify import Report, verify


def chain_report(
    session: Session,
    public_keys: Sequence[Ed25519PublicKey],
    every: int,
    sink: str | Path | None,
) -> Report:
    """Verify the whole log (as `handoff audit verify` does) with `public_keys`, and against
    the checkpoints kept in `sink` when there is one and it can be read (else a warning)."""
    held, note = kept_checkpoints(sink)
    report = verify(session, list(public_keys), every, kept=held)
    if note:
        report.warnings.append(note)
    return report


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
