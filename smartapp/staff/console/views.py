"""The auditor console's pages: search the referral log, read one event, export.

Auditors (`auditor`) read events; every page that shows events appends an `audit-read` event
naming the auditor and the query (reads of Part 2 records are themselves audited). They change
nothing: the only non-navigation action is the export download, a GET that reads the log and is
logged by the export function. The work is done by Flask-free modules beside this one (`search`,
`events`, `export`, `chain_status`); these views parse the request and render.
"""

from __future__ import annotations

import math

from flask import Response, abort, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from smartapp.audit import log as referral_log
from smartapp.audit import rows as stored
from smartapp.services import current_services
from smartapp.staff.auth import require_role
from smartapp.staff.console import tags
from smartapp.staff.console.blueprint import AUDITOR, MANAGER, app_chain_status, bp, signed_in
from smartapp.staff.console.events import event_detail as describe_event
from smartapp.staff.console.events import has_event, search_page
from smartapp.staff.console.export import EXPORT_TYPES, export_download
from smartapp.staff.console.search import OUTCOMES, PAGE_SIZE, Search


@bp.get("/")
@require_role(AUDITOR, MANAGER)
def index() -> ResponseReturnValue:
    """Where staff land: auditors on the log search, program managers on the dashboard."""
    if AUDITOR in signed_in()["roles"]:
        return redirect(url_for("console.events"))
    return redirect(url_for("console.dashboard_page"))


@bp.get("/events")
@require_role(AUDITOR)
def events() -> ResponseReturnValue:
    """Search the log; the page shows one page of matches and the chain's verification (from
    the last verified head on; the whole log with `verify=all`, the page's link)."""
    search = Search.from_args(request.args)
    page_size = int(current_app.config.get("CONSOLE_PAGE_SIZE") or PAGE_SIZE)
    auditor = signed_in()["user_ref"]
    if search.reads_data:  # the kinds and outcomes tagged first, a unit of work at a time
        tags.bring_up_to_date(current_services().db)
    with current_services().db.session() as session:
        # ?verify=all: the whole log on this view (else only what follows the verified head)
        full = request.args.get("verify") == "all"
        verified = app_chain_status(current_app, session, full=full)
        page = search_page(session, search, page_size, verified.report)
        referral_log.record_read(session, auditor, search.describe(), patient_id=search.patient)
    return render_template(
        "console/events.html",
        search=search,
        rows=page.rows,
        total=page.total,
        first=(search.page - 1) * page_size + 1 if page.total else 0,
        last=min(search.page * page_size, page.total),
        pages=max(1, math.ceil(page.total / page_size)),
        report=verified.report,
        verified=verified,
        types=page.types,
        users=page.users,
        kinds=_pack_kinds(),
        outcomes=OUTCOMES,
    )


def _pack_kinds() -> list[str]:
    suggestions = current_services().pack.document.suggestions
    return sorted({rule.kind for rule in suggestions})


@bp.get("/events/<int:seq>")
@require_role(AUDITOR)
def event_detail(seq: int) -> ResponseReturnValue:
    """One event: every column, its data, its hashes and whether the chain verifies up to it."""
    auditor = signed_in()["user_ref"]
    with current_services().db.session() as session:
        event = stored.get(session, seq)
        if event is None:
            abort(404, description=f"There is no event #{seq} in the referral log.")
        report = app_chain_status(current_app, session).report
        detail = describe_event(session, event, report)
        has_next = has_event(session, seq + 1)
        referral_log.record_read(
            session, auditor, f"event #{seq} ({event.type})", patient_id=event.patient_id
        )
    return render_template("console/event.html", event=detail, report=report, has_next=has_next)


@bp.get("/export")
@require_role(AUDITOR)
def export() -> ResponseReturnValue:
    """What the search on the page finds (every filter), as FHIR AuditEvent NDJSON (BALP) or
    CSV, as a file, in chain order (see `smartapp.staff.console.export`)."""
    fmt = request.args.get("format", "ndjson")
    if fmt not in EXPORT_TYPES:
        abort(400, description="Export as ndjson or csv.")
    search = Search.from_args(request.args)
    download = export_download(current_services().db, search, fmt, signed_in()["user_ref"])
    response = Response(download.body, mimetype=download.mimetype)
    response.headers.update(download.headers)
    return response
