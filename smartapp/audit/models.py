"""The referral log's tables: `log_event` (the hash chain) and `log_checkpoint` (signatures).

`LogEvent` is re-exported by `smartapp.db` under the same name, so `Database.create_all()` makes
both tables. Rows are written only by `smartapp.audit.log.append` (through the chain in
`smartapp.audit.chain`); nothing updates or deletes them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Index,
    Integer,
    String,
    Text,
)
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
    # A span of days of some types along one index (the supervisor's page: its 14 days).
    __table_args__ = (Index("ix_log_event_type_at", "type", "at"),)

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


class LogVerification(Base):
    """How far the chain was verified, so the console checks only what came after (issue 15).

    One row (`id` 1). `seq`/`hash`: the head the last passing verification reached (the next
    incremental check starts after it, from that hash); `checkpoint`: the last checkpoint it
    matched; `mark`: the last tamper mark it had seen (`LogTamperMark`). `full_*`: the last
    verification of the whole log (on demand, or `handoff audit verify --record` on a schedule)
    and what it found."""

    __tablename__ = "log_verification"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(SeqType, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    checkpoint: Mapped[int] = mapped_column(SeqType, default=0)
    mark: Mapped[int] = mapped_column(SeqType, default=0)
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    full_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    full_seq: Mapped[int | None] = mapped_column(SeqType, nullable=True)
    full_ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    full_summary: Mapped[str | None] = mapped_column(Text, nullable=True)


class LogTamperMark(Base):
    """A row of `log_event` or `log_checkpoint` was updated or deleted: written by a database
    trigger (migration 0006), never by Handoff, which only appends. The console's incremental
    verification goes back over the whole log when a new mark is here; a missing trigger is
    itself reported."""

    __tablename__ = "log_tamper_mark"

    id: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int | None] = mapped_column(SeqType, nullable=True)


class LogVisitSummary(Base):
    """The program dashboard's visits, kept as the log grows (issue 15): one row per visit
    (iss, patient, encounter) with suggestions shown, its joined state as JSON (the
    dashboard's `Visit`), so a dashboard view reads visits, never the log.
    `smartapp.staff.dashboard.store` writes it; `LogSummaryState` says how far."""

    __tablename__ = "log_visit_summary"

    id: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    visit_key: Mapped[str] = mapped_column(String(64), unique=True)
    referral: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    first_shown: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    state: Mapped[str] = mapped_column(Text)


# The columns of the dashboard's grouped sums, group first (covering indexes, see below).
SUMMED = (
    "week",
    "shape",
    "id",
    "suggestions",
    "signed",
    "decisions",
    "accepted",
    "coach",
    "contacted",
    "by_partner",
    "by_coach",
    "arrival",
    "handoff",
    "first_contacted",
    "attended",
    "engaged",
    "first_shown",
)
DEMOGRAPHICS_SUMMED = ("demographics", "decisions", "accepted", "first_shown")
LABELS_SUMMED = (
    "handoff",
    "labels",
    "coach",
    "by_partner",
    "by_coach",
    "attended",
    "engaged",
    "first_shown",
)


class LogVisitFigure(Base):
    """The dashboard's figures of one kept visit as typed columns (issue 15), so a view adds
    them up in SQL instead of loading every visit: written beside its `LogVisitSummary` row
    (same `visit_key`, rows in the same order) by `smartapp.staff.dashboard.store`.

    Flags are 0/1 integers (summed alike on every database); `to_*` are minutes from the ED
    arrival to a step (NULL where either time is unknown); `week` is the ISO year * 100 + week;
    `patient` a 64-bit digest of the patient key, only to count distinct patients; `shape`
    (kinds, rules and decision items), `declines`, `demographics` and `labels` (program
    entries) are digests of small JSON texts many visits share (`LogVisitText`), grouped on as
    integers and read once per group."""

    __tablename__ = "log_visit_figure"
    # Distinct patients counted along an index (no sort); times from arrival read in order
    # along an index: medians by OFFSET, histograms as ranges.
    __table_args__ = (
        Index("ix_log_visit_figure_patient", "patient", "first_shown"),
        Index("ix_log_visit_figure_to_decision", "coach", "to_decision", "first_shown"),
        Index("ix_log_visit_figure_to_contact", "coach", "to_contact", "first_shown"),
        Index("ix_log_visit_figure_to_first_contact", "handoff", "to_first_contact", "first_shown"),
        Index("ix_log_visit_figure_to_scheduled", "handoff", "to_scheduled", "first_shown"),
        Index("ix_log_visit_figure_to_attended", "handoff", "to_attended", "first_shown"),
        # The grouped sums read along covering indexes, in group order (no sort).
        Index("ix_log_visit_figure_sums", *SUMMED),
        Index("ix_log_visit_figure_demographics", *DEMOGRAPHICS_SUMMED),
        Index("ix_log_visit_figure_labels", *LABELS_SUMMED),
    )

    id: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    visit_key: Mapped[str] = mapped_column(String(64), unique=True)
    first_shown: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    week: Mapped[int] = mapped_column(Integer)
    patient: Mapped[int] = mapped_column(BigInteger)
    suggestions: Mapped[int] = mapped_column(Integer)
    signed: Mapped[int] = mapped_column(Integer)
    decisions: Mapped[int] = mapped_column(Integer)
    accepted: Mapped[int] = mapped_column(Integer)
    coach: Mapped[int] = mapped_column(Integer)
    contacted: Mapped[int] = mapped_column(Integer)
    handoff: Mapped[int] = mapped_column(Integer)
    by_partner: Mapped[int] = mapped_column(Integer)
    by_coach: Mapped[int] = mapped_column(Integer)
    attended: Mapped[int] = mapped_column(Integer)
    engaged: Mapped[int] = mapped_column(Integer)
    first_contacted: Mapped[int] = mapped_column(Integer)
    arrival: Mapped[int] = mapped_column(Integer)
    to_decision: Mapped[float | None] = mapped_column(Double, nullable=True)
    to_contact: Mapped[float | None] = mapped_column(Double, nullable=True)
    to_first_contact: Mapped[float | None] = mapped_column(Double, nullable=True)
    to_scheduled: Mapped[float | None] = mapped_column(Double, nullable=True)
    to_attended: Mapped[float | None] = mapped_column(Double, nullable=True)
    shape: Mapped[int] = mapped_column(BigInteger)
    declines: Mapped[int] = mapped_column(BigInteger)
    demographics: Mapped[int] = mapped_column(BigInteger)
    labels: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class LogVisitText(Base):
    """The JSON texts `LogVisitFigure` names by digest (one row per distinct text)."""

    __tablename__ = "log_visit_text"

    digest: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    text: Mapped[str] = mapped_column(Text)


class LogSummaryState(Base):
    """How far the summaries were brought: every event up to `seq` is in them (one row per
    summary `name`)."""

    __tablename__ = "log_summary_state"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(SeqType, default=0)
    mark: Mapped[int] = mapped_column(SeqType, default=0)  # the last tamper mark seen
    unreadable: Mapped[int] = mapped_column(Integer, default=0)  # damaged rows left out


class LogEventTag(Base):
    """A kind or an outcome an event's data names (`smartapp.staff.console.tags`), kept beside
    the log so that the console's kind and outcome filters read an index, not every event's
    data: the primary key (tag, seq) gives a tag's events newest first, and their count."""

    __tablename__ = "log_event_tag"

    tag: Mapped[str] = mapped_column(String(120), primary_key=True)
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)


class LogHandoffHolding(Base):
    """A coach's holding of a handoff, from the event that gave it (a coach's accept, a
    reassignment) to the one that ended it (another holder, a closed Task status), kept beside
    the log for the supervisor's caseload series (`smartapp.staff.supervisor.holdings`): the
    series reads the holdings of its days, not every handoff event of the log."""

    __tablename__ = "log_handoff_holding"
    __table_args__ = (
        Index("ix_log_handoff_holding_open", "end_seq"),
        Index("ix_log_handoff_holding_end_at", "end_at"),
        Index("ix_log_handoff_holding_coach", "coach_ref", "start_seq"),
    )

    referral: Mapped[str] = mapped_column(String(64), primary_key=True)
    start_seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=False)
    start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    coach_ref: Mapped[str] = mapped_column(String(500))
    coach_name: Mapped[str] = mapped_column(String(200), default="")
    end_seq: Mapped[int | None] = mapped_column(SeqType, nullable=True)
    end_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LogUserName(Base):
    """Each user's display name as last recorded where an identity was established (launches,
    staff sign-ins), kept as the log grows (`smartapp.audit.names`) so the console names users
    without reading every launch."""

    __tablename__ = "log_user_name"

    user_ref: Mapped[str] = mapped_column(String(500), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(SeqType)
