"""The database's signed checkpoints against the walked chain and the public keys: each signed
by a key given, none missing between two, each signing the hash the event at its seq has now."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from smartapp.audit.canonical import checkpoint_payload
from smartapp.audit.findings import Break, Report, span
from smartapp.audit.signing import key_id, verify_signature

# seq -> (hash, type) of the events at checkpoint seqs, as the chain walk found them.
AtCheckpoint = Mapping[int, tuple[str, str]]


def keys_by_id(public_keys: Sequence[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """The given public keys by key id, as checkpoints name them."""
    return {key_id(k): k for k in public_keys}


def payload(cp: Any) -> bytes:
    """The bytes a checkpoint (stored, or kept: the same attributes) signs."""
    return checkpoint_payload(
        seq=cp.seq, hash_=cp.hash, at=cp.at, prev_seq=cp.prev_seq, key_id=cp.key_id
    )


def _signature_break(cp: Any, keys: Mapping[str, Ed25519PublicKey]) -> Break | None:
    """A checkpoint signed by no key given, or whose signature does not verify."""
    key = keys.get(cp.key_id)
    if key is None:
        given = ", ".join(sorted(keys)) or "none"
        return Break(
            "checkpoint",
            cp.seq,
            None,
            f"checkpoint #{cp.seq} is signed by key {cp.key_id}, not by a key given "
            f"({given}): forged, or verify with that key's public half",
        )
    if not verify_signature(key, payload(cp), cp.signature):
        return Break(
            "checkpoint",
            cp.seq,
            None,
            f"checkpoint #{cp.seq}: the signature does not verify (checkpoint altered or forged)",
        )
    return None


def _gap_break(cp: Any, previous: int) -> Break | None:
    """A checkpoint chained to one that is no longer there."""
    if (cp.prev_seq or 0) == previous:
        return None
    return Break(
        "checkpoint",
        previous + 1,
        None,
        f"checkpoint #{cp.seq} follows checkpoint #{cp.prev_seq}, which is missing: "
        f"signed checkpoints after #{previous} were removed",
    )


def _rewritten_break(cp: Any, found: str, type_: str, last_good: int) -> Break:
    """The event at a checkpoint's seq no longer hashes to what it signed."""
    return Break(
        "rewritten",
        last_good + 1,
        None,
        f"history rewritten before checkpoint #{cp.seq}: event #{cp.seq} ({type_}) "
        f"now hashes to {found[:16]}..., the signed checkpoint says "
        f"{cp.hash[:16]}...; the change lies within #{last_good + 1}..#{cp.seq}"
        + (f" (checkpoint #{last_good} still matches)" if last_good else ""),
    )


def _removed_break(cp: Any, head_seq: int) -> Break:
    """A checkpoint that signed a head past the end of the log."""
    return Break(
        "removed",
        head_seq + 1,
        None,
        f"{span(head_seq + 1, cp.seq)} removed: checkpoint #{cp.seq} "
        f"signed a head that is no longer in the log (it ends at #{head_seq})",
    )


def check_checkpoints(
    report: Report,
    checkpoints: Iterable[Any],
    public_keys: Sequence[Ed25519PublicKey],
    at_checkpoint: AtCheckpoint,
    walked_to_end: bool,
    after: int = 0,
) -> None:
    """Add a break to `report` for every checkpoint that is not genuine, follows a missing one,
    or signs a hash the log no longer has; set `report.last_checkpoint` to the last one that
    matches before any rewrite. `after`: the checkpoints given follow checkpoint #after (an
    incremental check; 0: they are all of them)."""
    keys = keys_by_id(public_keys)
    previous, last_good, rewritten = after, after, False
    for cp in checkpoints:
        for found_break in (_signature_break(cp, keys), _gap_break(cp, previous)):
            if found_break is not None:
                report.breaks.append(found_break)
        previous = cp.seq
        if cp.seq in at_checkpoint:
            found, type_ = at_checkpoint[cp.seq]
            if found == cp.hash:
                if not rewritten:
                    last_good = cp.seq
                    report.last_checkpoint = cp.seq
            elif not rewritten:
                rewritten = True
                report.breaks.append(_rewritten_break(cp, found, type_, last_good))
        elif walked_to_end and cp.seq > report.head_seq:
            report.breaks.append(_removed_break(cp, report.head_seq))
