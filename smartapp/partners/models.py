"""Partner-side tables (consents to share, issued partner tokens, used client assertions)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from smartapp.db import Base, utcnow


class PartnerConsent(Base):
    """A patient's consent (42 CFR Part 2) to share one referral with one partner organisation,
    kept in Handoff (authoritative) as a FHIR Consent. Only an `active` row lets anything of the
    referral leave Handoff; revoking turns it `revoked` at once (the row stays, for the record)."""

    __tablename__ = "partner_consent"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    partner_id: Mapped[str] = mapped_column(String(100), index=True)
    program_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The purpose of use code (v3 ActReason: TREAT or COC).
    purpose: Mapped[str] = mapped_column(String(40))
    # active | revoked
    status: Mapped[str] = mapped_column(String(20), default="active", index=True)
    # The FHIR R4 Consent resource as Handoff holds it (status follows `status`).
    resource: Mapped[dict] = mapped_column(JSON)
    recorded_by_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    recorded_by_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_by_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    revoked_by_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class PartnerToken(Base):
    """An access token Handoff's authorization server issued to a partner's backend client:
    only its SHA-256 is kept (a copy of the database opens nothing), with the key it was
    earned with, so revoking the client or that key refuses the token at once."""

    __tablename__ = "partner_token"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner_id: Mapped[str] = mapped_column(String(100), index=True)
    client_id: Mapped[str] = mapped_column(String(200))
    kid: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class PartnerAssertion(Base):
    """A client assertion's `jti` already used by a partner client: the primary key refuses a
    replay in every process that shares the database, until the assertion has expired."""

    __tablename__ = "partner_assertion"

    client_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
