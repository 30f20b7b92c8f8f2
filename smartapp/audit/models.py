"""The referral log's tables: `log_event` (the hash chain) and `log_checkpoint` (signatures).

`LogEvent` is re-exported by `smartapp.db` under the same name, so `Database.create_all()` makes
both tables. Rows are written only by `smartapp.audit.log.append` (through the chain in
`smartapp.audit.chain`); nothing updates or deletes them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, synonym

from smartapp.db import Base

# INTEGER PRIMARY KEY on SQLite is the rowid itself (no second index); BIGINT elsewhere.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class LogEvent(Base):
    """One event of the referral log: a link of the hash chain.

    `seq` is gapless and assigned under the chain lock when the event is flushed; `hash` is
    SHA-256 over the canonical form of every other column plus `prev_hash` (see
    `smartapp.audit.canonical`). The first event's `prev_hash` is `GENESIS`.
    """

    __tablename__ = "log_event"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    type: Mapped[str] = mapped_column(String(50), index=True)
    user_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    iss: Mapped[str | None] = mapped_column(String(500), nullable=True)
    patient_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    encounter_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    # The column was called `id` before the chain; old callers keep working.
    id = synonym("seq")

    def __repr__(self) -> str:
        return f"<LogEvent #{self.seq} {self.type} {(self.hash or '')[:12]}>"


class LogCheckpoint(Base):
    """An Ed25519 signature over the chain head (seq, hash, time), chained to the previous
    checkpoint so that removing one is visible. Verified with the public key alone."""

    __tablename__ = "log_checkpoint"

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    prev_seq: Mapped[int] = mapped_column(SeqType, default=0)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(200))

    def __repr__(self) -> str:
        return f"<LogCheckpoint #{self.seq} {self.hash[:12]} key={self.key_id}>"
