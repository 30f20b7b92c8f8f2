"""What a referral-log event says, in a line for the console's table (pure)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from smartapp.audit.canonical import format_time
from smartapp.audit.models import LogEvent
from smartapp.audit.rows import StoredEvent


def _kinds(items: Sequence[dict]) -> str:
    return ", ".join(
        str(i.get("kind")) + (f" ({i['variant']})" if i.get("variant") else "") for i in items
    )


def summary(event: LogEvent | StoredEvent) -> str:
    """A short line for the table: what happened, without repeating the columns."""
    defect = getattr(event, "defect", None)  # only a stored (raw) row can be damaged
    if defect:
        return f"broken: {defect}"
    data = event.data or {}
    kind = event.type
    if kind == "launch":
        return f"registration {data.get('registration', '?')}"
    if kind == "suggestions-shown":
        items = data.get("suggestions") or []
        pack = data.get("pack") or {}
        return f"{len(items)} shown: {_kinds(items) or 'none'}" + (
            f" · pack {pack.get('id')} {pack.get('version')}" if pack else ""
        )
    if kind == "decision":
        parts = [
            f"{d.get('kind')} "
            + ("accepted" if d.get("accepted") else f"declined ({d.get('reason') or 'no reason'})")
            for d in data.get("decisions") or []
        ]
        mode = data.get("consult_mode")
        return "; ".join(parts) + (f" · consult {mode}" if mode else "")
    if kind == "write-attempt":
        written = data.get("written") or []
        text = f"attempt {data.get('attempt', '?')}: {data.get('outcome', '?')}"
        if written:
            text += f", {len(written)} resource(s)"
        if data.get("error"):
            text += f" · {data['error']}"
        return text
    if kind == "write-held":
        return f"held: {data.get('reason') or 'no reason given'}"
    if kind.startswith("coach-"):
        bits = [f"task {data.get('task_status', '?')}"]
        if data.get("program"):
            bits.append(f"program {data['program']}")
        if data.get("reason"):
            bits.append(str(data["reason"]))
        return " · ".join(bits)
    if kind == "audit-read":
        return f"query: {data.get('query', '')}"
    if kind == "audit-export":
        span = f"{data.get('from') or '…'} to {data.get('to') or '…'}"
        return f"{data.get('format')}, {data.get('events')} events ({span})"
    if kind == "staff-sign-in":
        return "roles: " + (", ".join(data.get("roles") or []) or "none")
    text = json.dumps(data, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 120 else text[:119] + "…"


def shown_time(value: datetime | None) -> str:
    """An event time for people: UTC, to the second ("unreadable" for a damaged row)."""
    if value is None:
        return "unreadable"
    return format_time(value)[:19].replace("T", " ") + "Z"
