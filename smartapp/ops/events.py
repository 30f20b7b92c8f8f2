"""Metrics counted from the referral log as its events commit: one hook on every SQLAlchemy
session (the events a transaction inserted, as the chain notes them, counted after its commit),
so the counts are exactly what the log holds, whichever code path appended them (the
screen, CDS Hooks, the outbox worker) and without touching those paths."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import event
from sqlalchemy.orm import Session

from smartapp.audit import chain
from smartapp.audit.models import LogEvent
from smartapp.ops import metrics

log = logging.getLogger("handoff.ops")

_installed: list[bool] = []


def _count(session: Session) -> None:
    """Count the events the committed transaction inserted (the chain notes them as it
    inserts them: `chain.LINKED`, read before the transaction's end forgets them)."""
    committed = session.info.get(chain.LINKED)
    if committed:
        try:
            count(committed)
        except Exception:  # a metric must never undo or break what was committed
            log.exception("metrics: an event could not be counted")


def count(events: Iterable[LogEvent]) -> None:
    """Count committed log events into the metrics."""
    for entry in events:
        data = entry.data if isinstance(entry.data, dict) else {}
        if entry.type == "launch":
            metrics.LAUNCHES.inc()
        elif entry.type == "suggestions-shown":
            for suggestion in data.get("suggestions") or []:
                metrics.SHOWN.labels(str(suggestion.get("kind"))).inc()
        elif entry.type == "decision":
            for kind, choice in decided(data):
                counter = metrics.ACCEPTED if choice == "accept" else metrics.DECLINED
                counter.labels(kind).inc()
        elif entry.type == "write-attempt":
            outcome = str(data.get("outcome") or "unknown")
            metrics.WRITES.labels(metrics.ehr_label(entry.iss or ""), outcome).inc()


def decided(data: dict) -> list[tuple[str, str]]:
    """(kind, accept|decline) of each suggestion a signed decision answered (its
    `decisions`: kind and accepted true/false; unanswered ones are left out)."""
    found = []
    for item in data.get("decisions") or []:
        if isinstance(item, dict) and isinstance(item.get("accepted"), bool):
            found.append((str(item.get("kind")), "accept" if item["accepted"] else "decline"))
    return found


def install() -> None:
    """The session hooks, once per process."""
    if _installed:
        return
    event.listen(Session, "after_commit", _count)
    _installed.append(True)
