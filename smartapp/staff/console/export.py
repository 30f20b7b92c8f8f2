"""The console's export download (Flask-free): what the auditor's search finds, as FHIR
AuditEvent NDJSON (BALP) or CSV, in chain order, logged by the export function itself."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from smartapp.audit import log as referral_log
from smartapp.audit.export import export as export_log
from smartapp.db import Database
from smartapp.staff.console.search import Search

EXPORT_TYPES = {"ndjson": "application/fhir+ndjson", "csv": "text/csv"}


@dataclass
class Download:
    """A file to send: its body, media type and headers (name, sha256, counts)."""

    body: str
    mimetype: str
    headers: dict[str, str] = field(default_factory=dict)


def download_name(search: Search, fmt: str) -> str:
    """The file name: the searched date range (or "all") and the format's extension."""
    span = "-".join(d.isoformat() for d in (search.start, search.end) if d) or "all"
    extension = "ndjson" if fmt == "ndjson" else "csv"
    return f"handoff-referral-log-{span}.{extension}"


def export_download(db: Database, search: Search, fmt: str, user: str) -> Download:
    """Export what `search` finds (every filter) for `user`. Each line carries its event's
    hashed bytes, so a filtered export is still evidence; the export logs itself (who, range,
    filter, count, sha256). `fmt` is a key of EXPORT_TYPES."""
    with db.session() as session:
        names = referral_log.user_names(session) if search.user else {}
    out = io.StringIO()
    result = export_log(
        db,
        out,
        fmt=fmt,
        start=search.start_at,
        end=search.end_at,
        user=user,
        destination="console download",
        where=search.conditions(names),
        keep=search.matches if search.reads_data else None,
        filter_description=search.filter_words() or None,
    )
    headers = {
        "Content-Disposition": f'attachment; filename="{download_name(search, fmt)}"',
        "X-Handoff-Export-Sha256": result.sha256,
        "X-Handoff-Export-Events": str(result.events),
    }
    if result.broken:  # damaged rows, left out: named so the auditor can look at them
        headers["X-Handoff-Export-Broken"] = " ".join(map(str, result.broken))
    return Download(out.getvalue(), EXPORT_TYPES[fmt], headers)
