"""The decision aids' routes, keyed by the launch context like the screen's: the COWS
calculator and the DSM-5 checklist post here (a plain form: it works without JavaScript),
then go back to the screen, which evaluates again with the new score.

Web layer only: the context is the launching browser's, with what was shown
(`screen.views.load_shown_context`), every POST carries the CSRF token (`web.check_csrf`), the
Flask-free `aids.service` does the work.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup

from smartapp.aids import data, service
from smartapp.screen.views import load_shown_context
from smartapp.services import current_services
from smartapp.web import check_csrf

bp = Blueprint("aids", __name__, url_prefix="/c")
log = logging.getLogger("handoff.aids")


def settings() -> service.AidSettings:
    return service.AidSettings.from_config(current_app.config)


@bp.app_context_processor
def aids_helpers() -> dict:
    """For the screen's aid partials: the forms' data and what the visit recorded."""

    def aids_recorded(context, shown: dict | None = None) -> dict:
        # what the screen read with the chart (one read for both), else once per request
        recorded = ((shown or {}).get("aids") or {}).get("recorded")
        if isinstance(recorded, dict):
            return recorded
        found = g.setdefault("aids_recorded", {})
        if context.id not in found:
            found[context.id] = service.recorded(current_services().db, context)
        return found[context.id]

    return {"aids_data": settings, "aids_recorded": aids_recorded, "cows_items": cows_items}


def cows_items(scale: data.CowsScale) -> Markup:
    """The COWS form's items (eleven questions, their answers and scores): the same on every
    screen that offers the form, so rendered once per scale and app and kept (they were about
    a third of rendering the screen). The scale is the one `data.cows_scale` keeps loaded."""
    kept: dict[int, tuple[data.CowsScale, Markup]] = current_app.extensions.setdefault(
        "handoff-cows-items", {}
    )
    found = kept.get(id(scale))
    if found is None or found[0] is not scale:
        template = current_app.jinja_env.get_template("aids/_cows_items.html")
        found = kept[id(scale)] = (scale, Markup(template.render(scale=scale)))
    return found[1]


def refused(title: str, message: str, status: int):
    """The error page for an aid that was not recorded, with the status to answer."""
    log.info("aid refused: status=%s", status)
    page = render_template(
        "error.html",
        title=title,
        message=message + " Go back to the screen to continue.",
    )
    return page, status


@bp.post("/<context_id>/aids/cows")
def cows(context_id: str):
    check_csrf()
    context = load_shown_context(context_id)
    scale = settings().cows
    sent = {item.id: request.form.get(f"cows-{item.id}", "") for item in scale.items}
    try:
        service.record_cows(current_services(), context, sent, settings(), datetime.now(UTC))
    except data.AidInputError as exc:
        return refused("The COWS was not recorded", str(exc), 422)
    except service.AidRefused as exc:
        return refused("The COWS was not recorded", str(exc), exc.status)
    return redirect(url_for("screen.show", context_id=context.id) + "#aid-cows")


@bp.post("/<context_id>/aids/dsm5")
def dsm5(context_id: str):
    check_csrf()
    context = load_shown_context(context_id)
    ticked = request.form.getlist("dsm5")
    if len(ticked) > 50:
        abort(400)
    try:
        service.record_dsm5(current_services(), context, ticked, settings())
    except data.AidInputError as exc:
        return refused("The checklist was not recorded", str(exc), 422)
    except service.AidRefused as exc:
        return refused("The checklist was not recorded", str(exc), exc.status)
    return redirect(url_for("screen.show", context_id=context.id) + "#aid-dsm5")
