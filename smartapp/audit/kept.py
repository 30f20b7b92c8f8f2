"""Checkpoints kept off the box: an append-only file of signed checkpoints an auditor keeps.

Whoever can write the database can delete the newest events together with the checkpoints
that signed them, and then rewrite what is left back to the previous checkpoint: the database
alone cannot show it. A copy of each checkpoint kept elsewhere can. `verify --checkpoints FILE`
then requires every event up to the last kept checkpoint to be present and unchanged (the
event at that seq must still hash to the kept hash, and the chain links every earlier event to
it), and the database's checkpoints to agree with the kept ones.

The file is JSON lines, one checkpoint per line, exactly the fields the signature covers plus
the signature (see `smartapp.audit.canonical`):

    {"at": "...Z", "hash": "...", "key": "...", "log": "handoff-referral-log", "prev": P,
     "seq": N, "signature": "base64", "v": 1}

It is written by `handoff audit checkpoint --export FILE` (the auditor's copy), and by the app
itself on every checkpoint when AUDIT_CHECKPOINT_SINK names a file (e.g. on a mounted
append-only share, or a file a log shipper forwards). Lines are only ever appended.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from smartapp.audit.canonical import LOG_ID, VERSION, canonical_json, format_time, parse_time


class KeptCheckpointError(Exception):
    """The kept-checkpoints file cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class KeptCheckpoint:
    """One signed checkpoint as kept outside the database (the attributes of a
    `LogCheckpoint`, so the same signature check applies)."""

    seq: int
    hash: str
    at: datetime
    prev_seq: int
    key_id: str
    signature: str
    line: int = 0  # where it was read, for messages

    def same_as(self, other: Any) -> bool:
        """Whether `other` (a `LogCheckpoint` or a kept one) is this very checkpoint."""
        return (
            self.seq == other.seq
            and self.hash == other.hash
            and self.key_id == other.key_id
            and self.signature == other.signature
            and (self.prev_seq or 0) == (other.prev_seq or 0)
            and format_time(self.at) == format_time(other.at)
        )


def record(checkpoint: Any) -> dict:
    """A checkpoint (`LogCheckpoint` or kept) as one line's object."""
    return {
        "v": VERSION,
        "log": LOG_ID,
        "seq": int(checkpoint.seq),
        "hash": checkpoint.hash,
        "at": format_time(checkpoint.at),
        "prev": int(checkpoint.prev_seq or 0),
        "key": checkpoint.key_id,
        "signature": checkpoint.signature,
    }


def append(path: str | Path, checkpoints: Iterable[Any]) -> int:
    """Append checkpoints to the file (created 0600 if missing), flushed to disk; returns how
    many. A lock keeps lines whole when several processes append at once."""
    lines = "".join(canonical_json(record(cp)) + "\n" for cp in checkpoints)
    if not lines:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, lines.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return lines.count("\n")


def read(path: str | Path) -> list[KeptCheckpoint]:
    """Every kept checkpoint, by seq (duplicates of one checkpoint once). Raises
    KeptCheckpointError for a line that is not a checkpoint, or two different checkpoints
    kept for one seq (one of them is not genuine: verify says which)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeptCheckpointError(f"{path}: {exc.strerror}") from exc
    found: dict[int, KeptCheckpoint] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        kept = _parse(line, f"{path}, line {number}", number)
        earlier = found.get(kept.seq)
        if earlier is not None and not earlier.same_as(kept):
            raise KeptCheckpointError(
                f"{path}: lines {earlier.line} and {number} keep two different checkpoints "
                f"#{kept.seq}"
            )
        found.setdefault(kept.seq, kept)
    return [found[seq] for seq in sorted(found)]


def _parse(line: str, where: str, number: int) -> KeptCheckpoint:
    try:
        obj = json.loads(line)
        if obj.get("log") != LOG_ID or obj.get("v") != VERSION:
            raise ValueError(f"not a {LOG_ID} v{VERSION} checkpoint")
        return KeptCheckpoint(
            seq=int(obj["seq"]),
            hash=str(obj["hash"]),
            at=parse_time(str(obj["at"])),
            prev_seq=int(obj["prev"]),
            key_id=str(obj["key"]),
            signature=str(obj["signature"]),
            line=number,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise KeptCheckpointError(f"{where}: not a kept checkpoint ({exc})") from exc
