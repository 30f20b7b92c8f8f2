"""CDS Hooks tables: the JWT ids already used by each trusted CDS client (the replay window)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from smartapp.db import Base


class CdsJwtUse(Base):
    """A CDS client's JWT `jti` already seen: the primary key refuses a replay in every process
    sharing the database, until the JWT has expired (then the row may go)."""

    __tablename__ = "cds_jwt_use"

    issuer: Mapped[str] = mapped_column(String(500), primary_key=True)
    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
