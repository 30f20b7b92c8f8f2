"""The program dashboard page, on the console blueprint (endpoint `console.dashboard_page`).

Program managers (and auditors) see aggregate figures only: no patient id, name or encounter
anywhere (see `smartapp.staff.dashboard.figures`). Charts are SVG drawn from plain numbers
(`charts`), each with a data table as its text alternative. Viewing is logged as an audit read.
"""

from __future__ import annotations

from flask import current_app, render_template, request
from flask.typing import ResponseReturnValue

from smartapp.audit import log as referral_log
from smartapp.partners.registry import Partner
from smartapp.partners.runtime import partner_services
from smartapp.services import current_services
from smartapp.staff.auth import require_role
from smartapp.staff.console.blueprint import AUDITOR, MANAGER, bp, signed_in
from smartapp.staff.console.search import Search
from smartapp.staff.dashboard.charts import dashboard_charts, outcome_chart
from smartapp.staff.dashboard.figures import DEFAULT_MIN_CELL
from smartapp.staff.dashboard.outcomes import Directory
from smartapp.staff.dashboard.service import bring_up_to_date, directory, program_dashboard


@bp.get("/dashboard")
@require_role(MANAGER, AUDITOR)
def dashboard_page() -> ResponseReturnValue:
    """Aggregate figures for the program; no patient identity (see `smartapp.staff.dashboard`)."""
    search = Search.from_args(request.args)
    min_cell = int(current_app.config.get("DASHBOARD_MIN_CELL") or DEFAULT_MIN_CELL)
    viewer = signed_in()["user_ref"]
    bring_up_to_date(current_services().db)
    with current_services().db.session() as session:
        shown = program_dashboard(
            session,
            start=search.start_at,
            end=search.end_at,
            min_cell=min_cell,
            programs=_catalog_programs(),
            names=_names(),
        )
        period = "-".join(d.isoformat() for d in (search.start, search.end) if d) or "all time"
        referral_log.record_read(session, viewer, f"program dashboard ({period}), aggregates only")
    return render_template(
        "console/dashboard.html",
        search=search,
        figures=shown.figures,
        charts=dashboard_charts(shown.figures)
        | {"outcomes": outcome_chart(shown.figures["outcomes"])},
        titles=_rule_titles(),
        unreadable=shown.unreadable,
    )


def _catalog_programs() -> list[str]:
    """The community catalog's program names: the only program names the dashboard shows."""
    catalog = current_services().catalog
    return [program.name for program in catalog.programs()] if catalog else []


def _names() -> Directory:
    """The catalog's program ids and organisations, and the partners' names, for the
    outcomes (lifecycle updates name their program and partner by id)."""
    catalog = current_services().catalog
    return directory(catalog.programs() if catalog else [], _partners())


def _partners() -> list[Partner]:
    """The community partners (partner data, re-read on change), for their names."""
    return list(partner_services().partners())


def _rule_titles() -> dict[str, str]:
    """Rule id and kind -> the title physicians see, for readable labels."""
    titles: dict[str, str] = {}
    for rule in current_services().pack.document.suggestions:
        titles.setdefault(rule.id, rule.title)
        titles.setdefault(rule.kind, rule.title)
    return titles
