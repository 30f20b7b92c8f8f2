"""The auditor console (search the referral log, read one event, export) and the program dashboard.

Auditors (`auditor`) read events; every page that shows events appends an `audit-read` event
naming the auditor and the query (reads of Part 2 records are themselves audited). They change
nothing: the only non-navigation action is the export download, a GET that reads the log and is
logged by the export function. Program managers (`program-manager`) see only the dashboard:
aggregate figures from `smartapp.staff.dashboard`, with no patient id, name or encounter anywhere.
Charts are SVG drawn here from plain numbers (no script, no inline style: CSP stays
`script-src 'self'; style-src 'self'`), each with a data table as its text alternative.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session
from werkzeug.routing import BuildError

from smartapp.audit import kept
from smartapp.audit import log as referral_log
from smartapp.audit import rows as stored
from smartapp.audit.canonical import GENESIS, event_hash, format_time
from smartapp.audit.chain import DEFAULT_EVERY, app_checkpointing
from smartapp.audit.export import export as export_log
from smartapp.audit.kept import KeptCheckpoint, KeptCheckpointError
from smartapp.audit.models import LogEvent
from smartapp.audit.rows import StoredEvent
from smartapp.audit.verify import Report, verify
from smartapp.services import current_services
from smartapp.staff import dashboard
from smartapp.staff.auth import current_staff, require_role

bp = Blueprint("console", __name__, url_prefix="/console")

AUDITOR = "auditor"
MANAGER = "program-manager"
PAGE_SIZE = 50
MAX_PAGE = 1_000_000
OUTCOMES = ("accepted", "declined", "written", "queued", "failed", "held")
# The event types an outcome can be found in.
OUTCOME_TYPES = {
    "accepted": ("decision",),
    "declined": ("decision",),
    "written": ("write-attempt",),
    "queued": ("write-attempt",),
    "failed": ("write-attempt",),
    "held": ("write-held",),
}
KIND_TYPES = ("suggestions-shown", "decision")
# Only these event types feed the dashboard (never audit reads, exports or sign-ins).
DASHBOARD_TYPES = ("suggestions-shown", "decision", "coach-contact", "coach-link", "coach-close")
# Chart widths in CSS pixels: drawn at the size they are shown (text stays 12-13 px), scaled
# down only on narrow screens.
FULL, HALF = 1170, 560
EXPORT_TYPES = {"ndjson": "application/fhir+ndjson", "csv": "text/csv"}


# -- the search -------------------------------------------------------------------------------


@dataclass
class Search:
    """The auditor's filter, read from the query string; `errors` says what was ignored."""

    start: date | None = None
    end: date | None = None  # inclusive
    user: str = ""
    patient: str = ""
    kind: str = ""
    outcome: str = ""
    type: str = ""
    page: int = 1
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: Any) -> Search:
        search = cls()
        search.start = search._date(args.get("from", ""), "From")
        search.end = search._date(args.get("to", ""), "To")
        if search.start and search.end and search.end < search.start:
            search.errors.append("The end date is before the start date: both were ignored.")
            search.start = search.end = None
        search.user = args.get("user", "").strip()[:500]
        search.patient = args.get("patient", "").strip()[:200]
        search.kind = args.get("kind", "").strip()[:100]
        search.type = args.get("type", "").strip()[:50]
        outcome = args.get("outcome", "").strip()
        if outcome and outcome not in OUTCOMES:
            search.errors.append(f"Unknown outcome {outcome!r}: ignored.")
            outcome = ""
        search.outcome = outcome
        try:
            search.page = min(max(1, int(args.get("page", "1"))), MAX_PAGE)
        except ValueError:
            search.page = 1
        return search

    def _date(self, text: str, label: str) -> date | None:
        text = text.strip()
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            self.errors.append(f"{label}: {text!r} is not a date (YYYY-MM-DD): ignored.")
            return None

    @property
    def start_at(self) -> datetime | None:
        """The first instant of the range (UTC)."""
        return _midnight(self.start) if self.start else None

    @property
    def end_at(self) -> datetime | None:
        """The instant after the range (the end date is inclusive); None: open."""
        if self.end is None or self.end == date.max:
            return None
        return _midnight(self.end + timedelta(days=1))

    def args(self, **changes: Any) -> dict[str, str]:
        """The filter as query arguments (empty ones left out), with `changes` applied."""
        values = {
            "from": self.start.isoformat() if self.start else "",
            "to": self.end.isoformat() if self.end else "",
            "user": self.user,
            "patient": self.patient,
            "kind": self.kind,
            "outcome": self.outcome,
            "type": self.type,
            "page": str(self.page) if self.page > 1 else "",
        }
        values.update({k: str(v) if v else "" for k, v in changes.items()})
        return {k: v for k, v in values.items() if v}

    def describe(self) -> str:
        """The query in words, for the `audit-read` event."""
        parts = [f"{k}={v}" for k, v in self.args().items() if k != "page"]
        return f"log search ({', '.join(parts) or 'all events'}), page {self.page}"

    @property
    def types(self) -> tuple[str, ...] | None:
        """The event types this filter can match (None: any)."""
        allowed: set[str] | None = None
        if self.outcome:
            allowed = set(OUTCOME_TYPES[self.outcome])
        if self.kind:
            allowed = set(KIND_TYPES) if allowed is None else allowed & set(KIND_TYPES)
        if self.type:
            allowed = {self.type} if allowed is None else allowed & {self.type}
        return None if allowed is None else tuple(sorted(allowed))

    def conditions(self, names: Mapping[str, str] | None = None) -> list[ColumnElement[bool]]:
        """The filter's column conditions, in SQL; kind and outcome are read from `data`.

        The user filter finds a user by id or by name (`names`: reference -> display name, from
        `referral_log.user_names`), any part of either, letter case aside.
        """
        found: list[ColumnElement[bool]] = []
        if self.start_at:
            found.append(LogEvent.at >= self.start_at)
        if self.end_at:
            found.append(LogEvent.at < self.end_at)
        if self.user:
            wanted = self.user.casefold()
            named = sorted(ref for ref, name in (names or {}).items() if wanted in name.casefold())
            by_id = func.lower(LogEvent.user_ref).contains(self.user.lower(), autoescape=True)
            found.append(or_(by_id, LogEvent.user_ref.in_(named)) if named else by_id)
        if self.patient:
            found.append(LogEvent.patient_id == self.patient)
        if self.types is not None:
            found.append(LogEvent.type.in_(self.types))
        return found

    def query(self, names: Mapping[str, str] | None = None) -> Select:
        """The matching rows, read raw (`smartapp.audit.rows`): a damaged row is shown, marked."""
        return stored.select_events(*self.conditions(names))

    @property
    def reads_data(self) -> bool:
        """Whether matching needs each event's data (kind, outcome): `matches`."""
        return bool(self.kind or self.outcome)

    def filter_words(self) -> str:
        """The filter in words (dates aside), for the export's log entry; "" for none."""
        return ", ".join(
            f"{k}={v}" for k, v in self.args().items() if k not in ("page", "from", "to")
        )

    def matches(self, event: StoredEvent) -> bool:
        """Kind and outcome, from the event's data (only asked when one of them is set); an
        event whose data cannot be read matches neither."""
        data = event.data or {}
        if event.type == "suggestions-shown":
            return not self.outcome and any(
                s.get("kind") == self.kind for s in data.get("suggestions") or []
            )
        if event.type == "decision":
            return any(
                (not self.kind or d.get("kind") == self.kind)
                and (not self.outcome or bool(d.get("accepted")) == (self.outcome == "accepted"))
                for d in data.get("decisions") or []
            )
        if event.type == "write-attempt":
            return not self.kind and data.get("outcome") == self.outcome
        if event.type == "write-held":
            return not self.kind and self.outcome == "held"
        return False


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def run_search(
    session: Session, search: Search, page_size: int, names: Mapping[str, str] | None = None
) -> tuple[list[StoredEvent], int]:
    """One page of matching events, newest first, and how many match in all.

    Column filters run in SQL with LIMIT/OFFSET; a kind or outcome filter reads each candidate's
    data in Python (JSON queries differ between SQLite and PostgreSQL), streaming the rows.
    """
    query = search.query(names)
    offset = (search.page - 1) * page_size
    if not search.reads_data:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = stored.read(
            session, query.order_by(LogEvent.seq.desc()).offset(offset).limit(page_size)
        )
        return list(rows), total
    page, total = [], 0
    stream = stored.read(session, query.order_by(LogEvent.seq.desc()), 500)
    for event in stream:
        if search.matches(event):
            if offset <= total < offset + page_size:
                page.append(event)
            total += 1
    return page, total


# -- what an event says, in a line ------------------------------------------------------------


def _kinds(items: Sequence[dict]) -> str:
    return ", ".join(
        str(i.get("kind")) + (f" ({i['variant']})" if i.get("variant") else "") for i in items
    )


def summary(event: LogEvent | StoredEvent) -> str:
    """A short line for the table: what happened, without repeating the columns."""
    if getattr(event, "defect", None):
        return f"broken: {event.defect}"
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


# -- chain verification -----------------------------------------------------------------------


def chain_report(session: Session) -> Report:
    """Verify the whole log with the app's checkpoint key (as `handoff audit verify` does),
    and against the checkpoints kept in AUDIT_CHECKPOINT_SINK when the app can read it."""
    signer = app_checkpointing(current_app).signer
    every = int(current_app.config.get("AUDIT_CHECKPOINT_EVERY") or DEFAULT_EVERY)
    held, note = _kept_checkpoints()
    report = verify(session, [signer.public_key] if signer else [], every, kept=held)
    if note:
        report.warnings.append(note)
    return report


def _kept_checkpoints() -> tuple[list[KeptCheckpoint], str | None]:
    """The sink's kept checkpoints, if there is a sink and it can be read (else a note why)."""
    sink = current_app.config.get("AUDIT_CHECKPOINT_SINK")
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


# -- charts -----------------------------------------------------------------------------------


def nice_scale(largest: float, ticks: int = 4) -> tuple[float, float]:
    """(top, step) of a count axis from 0 that shows `largest`: whole, round steps (1, 2, 5 x
    10^n), about `ticks` of them."""
    if largest <= 0:
        return 1.0, 1.0
    raw = largest / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = max(1.0, next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))
    return math.ceil(largest / step) * step, step


def column_chart(
    chart_id: str,
    title: str,
    categories: Sequence[tuple[str, str]],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    *,
    width: int = FULL,
    height: int = 250,
) -> dict:
    """Grouped vertical bars: categories (label, second line) x series (name, css, values)."""
    left, right, top, bottom = 44, 8, 14, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, _, vs in series for v in vs if v is not None]
    top_value, step = nice_scale(max(values, default=0))
    band = plot_w / max(len(categories), 1)
    bar_w = band * 0.76 / max(len(series), 1)
    bars = []
    for i, (label, sub) in enumerate(categories):
        for j, (name, css, vs) in enumerate(series):
            value = vs[i]
            if value is None:
                continue
            h = plot_h * value / top_value
            bars.append(
                {
                    "x": round(left + i * band + band * 0.12 + j * bar_w, 1),
                    "y": round(top + plot_h - h, 1),
                    "w": round(bar_w - 1, 1),
                    "h": round(h, 1),
                    "css": css,
                    "title": f"{label} {sub}".strip() + f": {name} {_number(value)}",
                }
            )
    ticks = []
    k = 0.0
    while k <= top_value + 1e-9:
        ticks.append({"y": round(top + plot_h - plot_h * k / top_value, 1), "label": _number(k)})
        k += step
    return {
        "id": chart_id,
        "title": title,
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "base": top + plot_h,
        "bars": bars,
        "ticks": ticks,
        "labels": [
            {"x": round(left + (i + 0.5) * band, 1), "text": label, "sub": sub}
            for i, (label, sub) in enumerate(categories)
        ],
        "legend": [{"name": name, "css": css} for name, css, _ in series],
        "y_label": height - bottom + 17,
        "y_sub": height - bottom + 32,
    }


def bar_chart(
    chart_id: str,
    title: str,
    rows: Sequence[tuple[str, float | None, str]],
    *,
    css: str = "s0",
    maximum: float | None = None,
    width: int = FULL,
    label_width: int = 250,
) -> dict:
    """Horizontal bars: (label, value or None when suppressed, value as text); with a fixed
    `maximum` (a share: 1.0) each bar sits on a track showing the whole."""
    row_h, top = 26, 6
    values = [v for _, v, _ in rows if v is not None]
    top_value = maximum or max(values, default=0) or 1
    span = width - label_width - 90
    bars = []
    for i, (label, value, text) in enumerate(rows):
        y = top + i * row_h
        w = 0.0 if value is None else max(span * value / top_value, 1.0 if value else 0.0)
        bars.append(
            {
                "label": label,
                "y": y,
                "w": round(w, 1),
                "text": text,
                "text_x": round(label_width + (span if maximum else w) + 6, 1),
                "suppressed": value is None,
                "css": css,
            }
        )
    return {
        "id": chart_id,
        "title": title,
        "width": width,
        "height": top * 2 + row_h * len(rows),
        "label_width": label_width,
        "row_h": row_h,
        "span": span,
        "track": maximum is not None,
        "bars": bars,
    }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


# -- pages ------------------------------------------------------------------------------------


def _logout_url() -> str | None:
    try:
        return url_for("staff.logout")
    except BuildError:
        return None


@bp.context_processor
def console_globals() -> dict:
    staff = current_staff() or {}
    roles = staff.get("roles", [])
    return {
        "staff": staff,
        "is_auditor": AUDITOR in roles,
        "logout_url": _logout_url(),
        "format_minutes": dashboard.format_minutes,
        "percent": dashboard.percent,
    }


@bp.get("/")
@require_role(AUDITOR, MANAGER)
def index():
    """Where staff land: auditors on the log search, program managers on the dashboard."""
    if AUDITOR in current_staff()["roles"]:
        return redirect(url_for("console.events"))
    return redirect(url_for("console.dashboard_page"))


@bp.get("/events")
@require_role(AUDITOR)
def events():
    """Search the log; the page shows one page of matches and the chain's verification."""
    search = Search.from_args(request.args)
    page_size = int(current_app.config.get("CONSOLE_PAGE_SIZE") or PAGE_SIZE)
    auditor = current_staff()["user_ref"]
    with current_services().db.session() as session:
        names = referral_log.user_names(session)
        rows, total = run_search(session, search, page_size, names)
        report = chain_report(session)
        types = sorted(session.scalars(select(LogEvent.type).distinct()))
        users = list(
            session.scalars(
                select(LogEvent.user_ref)
                .distinct()
                .where(LogEvent.type.in_(("launch", "decision", "staff-sign-in")))
                .order_by(LogEvent.user_ref)
                .limit(500)
            )
        )
        table = [_row(e, names) for e in rows]
        referral_log.record_read(session, auditor, search.describe(), patient_id=search.patient)
    pages = max(1, math.ceil(total / page_size))
    return render_template(
        "console/events.html",
        search=search,
        rows=table,
        total=total,
        first=(search.page - 1) * page_size + 1 if total else 0,
        last=min(search.page * page_size, total),
        pages=pages,
        report=report,
        types=types,
        users=[{"ref": u, "name": names.get(u, "")} for u in users if u],
        kinds=_pack_kinds(),
        outcomes=OUTCOMES,
    )


def _row(event: StoredEvent, names: Mapping[str, str]) -> dict:
    return {
        "seq": event.seq,
        "broken": event.broken,
        "time": shown_time(event.at),
        "type": event.type,
        "user": event.user_ref or "",
        "user_name": names.get(event.user_ref or "", ""),
        "patient": event.patient_id or "",
        "encounter": event.encounter_id or "",
        "summary": summary(event),
    }


def _pack_kinds() -> list[str]:
    suggestions = current_services().pack.document.suggestions
    return sorted({rule.kind for rule in suggestions})


@bp.get("/events/<int:seq>")
@require_role(AUDITOR)
def event_detail(seq: int):
    """One event: every column, its data, its hashes and whether the chain verifies up to it."""
    auditor = current_staff()["user_ref"]
    with current_services().db.session() as session:
        event = stored.get(session, seq)
        if event is None:
            abort(404, description=f"There is no event #{seq} in the referral log.")
        names = referral_log.user_names(session)
        report = chain_report(session)
        previous = session.scalar(select(LogEvent.hash).where(LogEvent.seq == seq - 1))
        expected_prev = previous if seq > 1 else GENESIS
        checkpoint = next((c for c in stored.checkpoints(session) if c.seq >= seq), None)
        detail = {
            **_row(event, names),
            "at": format_time(event.at) if event.at else "",
            "iss": event.iss or "",
            "data": _shown_data(event),
            "defect": event.defect,
            "hash": event.hash,
            "prev_hash": event.prev_hash,
            "hash_ok": not event.broken and event_hash(event) == event.hash,
            "link_ok": event.prev_hash == expected_prev,
            "verified": verified_through(report, seq),
            "checkpoint": checkpoint.seq if checkpoint else None,
            "signed": checkpoint is not None and report.last_checkpoint >= checkpoint.seq,
        }
        has_next = session.scalar(select(LogEvent.seq).where(LogEvent.seq == seq + 1)) is not None
        referral_log.record_read(
            session, auditor, f"event #{seq} ({event.type})", patient_id=event.patient_id
        )
    return render_template("console/event.html", event=detail, report=report, has_next=has_next)


def _shown_data(event: StoredEvent) -> str:
    """The event's data as indented JSON; for a damaged row, what the database holds."""
    if event.broken:
        return str(event.raw_data)
    return json.dumps(event.data, indent=2, sort_keys=True, ensure_ascii=False)


@bp.get("/export")
@require_role(AUDITOR)
def export():
    """What the search on the page finds (every filter), as FHIR AuditEvent NDJSON (BALP) or
    CSV, as a file, in chain order. Each line carries its event's hashed bytes, so a filtered
    export is still evidence. The export function logs the export itself (who, range, filter,
    count, sha256).
    """
    fmt = request.args.get("format", "ndjson")
    if fmt not in EXPORT_TYPES:
        abort(400, description="Export as ndjson or csv.")
    search = Search.from_args(request.args)
    with current_services().db.session() as session:
        names = referral_log.user_names(session) if search.user else {}
    out = io.StringIO()
    result = export_log(
        current_services().db,
        out,
        fmt=fmt,
        start=search.start_at,
        end=search.end_at,
        user=current_staff()["user_ref"],
        destination="console download",
        where=search.conditions(names),
        keep=search.matches if search.reads_data else None,
        filter_description=search.filter_words() or None,
    )
    span = "-".join(d.isoformat() for d in (search.start, search.end) if d) or "all"
    extension = "ndjson" if fmt == "ndjson" else "csv"
    response = Response(out.getvalue(), mimetype=EXPORT_TYPES[fmt])
    response.headers["Content-Disposition"] = (
        f'attachment; filename="handoff-referral-log-{span}.{extension}"'
    )
    response.headers["X-Handoff-Export-Sha256"] = result.sha256
    response.headers["X-Handoff-Export-Events"] = str(result.events)
    if result.broken:  # damaged rows, left out: named so the auditor can look at them
        response.headers["X-Handoff-Export-Broken"] = " ".join(map(str, result.broken))
    return response


# -- the dashboard ----------------------------------------------------------------------------


def load_dashboard_events(session: Session, broken: list[int] | None = None) -> Iterator[dict]:
    """The events the dashboard counts, as dicts (the aggregation is pure). Damaged rows are
    left out; their seqs are added to `broken` when given."""
    query = stored.select_events(LogEvent.type.in_(DASHBOARD_TYPES)).order_by(LogEvent.seq)
    for event in stored.read(session, query, 2000):
        if event.broken:
            if broken is not None:
                broken.append(event.seq)
            continue
        yield {
            "seq": event.seq,
            "at": event.at,
            "type": event.type,
            "iss": event.iss,
            "patient_id": event.patient_id,
            "encounter_id": event.encounter_id,
            "data": event.data,
        }


@bp.get("/dashboard")
@require_role(MANAGER, AUDITOR)
def dashboard_page():
    """Aggregate figures for the program; no patient identity (see `smartapp.staff.dashboard`)."""
    search = Search.from_args(request.args)
    min_cell = int(current_app.config.get("DASHBOARD_MIN_CELL") or dashboard.DEFAULT_MIN_CELL)
    viewer = current_staff()["user_ref"]
    broken: list[int] = []
    with current_services().db.session() as session:
        figures = dashboard.summarize(
            list(load_dashboard_events(session, broken)),
            start=search.start_at,
            end=search.end_at,
            min_cell=min_cell,
            programs=_catalog_programs(),
        )
        period = "-".join(d.isoformat() for d in (search.start, search.end) if d) or "all time"
        referral_log.record_read(session, viewer, f"program dashboard ({period}), aggregates only")
    return render_template(
        "console/dashboard.html",
        search=search,
        figures=figures,
        charts=dashboard_charts(figures),
        titles=_rule_titles(),
        unreadable=len(broken),
    )


def _catalog_programs() -> list[str]:
    """The community catalog's program names: the only program names the dashboard shows."""
    catalog = current_services().catalog
    return [program.name for program in catalog.programs()] if catalog else []


def _rule_titles() -> dict[str, str]:
    """Rule id and kind -> the title physicians see, for readable labels."""
    titles: dict[str, str] = {}
    for rule in current_services().pack.document.suggestions:
        titles.setdefault(rule.id, rule.title)
        titles.setdefault(rule.kind, rule.title)
    return titles


def dashboard_charts(figures: dict) -> dict[str, dict]:
    """The SVG geometry of every chart, from the (already suppressed) figures."""
    weeks = figures["weeks"]
    categories = [
        (w["week"].split("-")[1], datetime.fromisoformat(w["monday"]).strftime("%d %b"))
        for w in weeks
    ]
    charts = {
        "weekly": column_chart(
            "weekly",
            "Suggestions shown, accepted and declined, by ISO week",
            categories,
            [
                ("Shown", "s0", [w["suggestions"] for w in weeks]),
                ("Accepted", "s1", [w["accepted"] for w in weeks]),
                ("Declined", "s2", [w["declined"] for w in weeks]),
            ],
        ),
        "coach": column_chart(
            "coach",
            "Coach referrals, contacts and program links, by ISO week",
            categories,
            [
                ("Coach referrals", "s0", [w["coach_referrals"] for w in weeks]),
                ("Contacted", "s3", [w["contacted"] for w in weeks]),
                ("Linked to a program", "s1", [w["linked"] for w in weeks]),
            ],
        ),
        "reasons": bar_chart(
            "reasons",
            "Decline reasons",
            [(r["reason"], r["count"], str(r["count"])) for r in figures["decline_reasons"]],
            css="s2",
            width=HALF,
            label_width=220,
        ),
        "rules": bar_chart(
            "rules",
            "Visits in which each rule fired",
            [(r["rule"], r["fired"], str(r["fired"])) for r in figures["rules"]],
            css="s0",
        ),
    }
    times = figures["times"]
    buckets = [b["label"] for b in times["referral"]["buckets"]]
    charts["times"] = column_chart(
        "times",
        "Time from ED arrival to coach referral and to coach contact",
        [(label, "") for label in buckets],
        [
            ("To referral", "s0", [b["count"] for b in times["referral"]["buckets"]]),
            ("To contact", "s3", [b["count"] for b in times["contact"]["buckets"]]),
        ],
        width=HALF,
        height=230,
    )
    for dimension in figures["equity"]:
        charts[f"equity-{dimension['name']}"] = bar_chart(
            f"equity-{dimension['name']}",
            f"Acceptance by {dimension['label'].lower()}",
            [
                (row["value"], row["acceptance"], row["acceptance_text"])
                for row in dimension["rows"]
            ],
            css="s1",
            maximum=1.0,
            width=HALF,
            label_width=240,
        )
    return charts
