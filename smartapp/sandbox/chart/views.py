"""Chart blueprint: the ED list (signs the demo physician in) and the patient chart.

The chart page performs an EHR launch of a registered app in an iframe: a fresh launch
value bound to (patient, current ED encounter, signed-in user), passed with `iss`.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, abort, render_template, request

from smartapp.sandbox.auth.views import current_user, sign_in
from smartapp.sandbox.chart.data import chart_view, ed_patients, since
from smartapp.sandbox.context import sandbox
from smartapp.sandbox.seed import seed_state

bp = Blueprint("chart", __name__)


@bp.get("/")
def patients() -> str:
    """ED track board; opening it signs the demo ED physician in."""
    box = sandbox()
    user = sign_in()
    now = box.now()
    rows = ed_patients(box.service, now)
    return render_template(
        "patients.html",
        rows=rows,
        user=user,
        now=now,
        since=since,
        seed=seed_state(box.db),
        fhir_base=box.fhir_base,
    )


@bp.get("/chart/<patient_id>")
def chart(patient_id: str) -> str:
    """A patient's chart with the app launched in an iframe (and a new-tab launch link)."""
    box = sandbox()
    user = current_user() or sign_in()
    now = box.now()
    seeded = seed_state(box.db) or {}
    view = chart_view(box.service, patient_id, now, seeded.get("seeded_at", ""))
    if view is None:
        abort(404, description=f"No patient {patient_id} in the ED")
    clients = box.store.clients()
    wanted = request.args.get("app")
    client = next((c for c in clients if c.client_id == wanted), clients[0] if clients else None)
    frame_src = tab_href = None
    if client is not None:
        encounter = view.patient.encounter_id

        def launch_link() -> str:
            launch = box.store.create_launch(patient_id, encounter, user.id)
            query = urlencode({"iss": box.fhir_base, "launch": launch}, safe=":/")
            return f"{client.launch_url}?{query}"

        # Separate single-use launches for the iframe and the new-tab link.
        frame_src, tab_href = launch_link(), launch_link()
    return render_template(
        "chart.html",
        view=view,
        p=view.patient,
        user=user,
        now=now,
        since=since,
        client=client,
        clients=clients,
        frame_src=frame_src,
        tab_href=tab_href,
    )
