"""Issue 9, items 14 and 15: the dashboard counts only visits where a suggestion was shown, and
names only catalog programs (a coach's free text is grouped as "Other", never shown)."""

from __future__ import annotations

import json

from smartapp.services import current_services
from smartapp.staff import dashboard
from tests.console import logdata
from tests.staff_login import STAFF_KEY, staff_session_token

# Two launches where the rules suggested nothing (the screen said so): not "visits with
# suggestions", and not in any equity denominator.
NOTHING_SHOWN = (
    logdata.Visit(
        "pat-20-0d0d",
        "enc-20-aaaa",
        "Lee Empty",
        logdata.DR_A,
        logdata.at("2024-05-08T10:00"),
        "2024-05-08T10:00:00Z",
        logdata.demo(logdata.WHITE, logdata.NH, "female", "25-34"),
        (),
    ),
    logdata.Visit(
        "pat-21-0e0e",
        "enc-21-bbbb",
        "Kim Empty",
        logdata.DR_B,
        logdata.at("2024-05-14T10:00"),
        "2024-05-14T10:00:00Z",
        logdata.demo(logdata.ASIAN, logdata.HISP, "male", "65+"),
        (),
        decisions=(),
        decided_after=30,
    ),
)
FREE_TEXT = "linked to Father Mike at St Anne's, cell 555-0199"
CATALOG = ("Bridge Clinic", "Harbor Recovery", "Example Bridge Clinic")


def test_visits_without_a_shown_suggestion_are_not_counted():
    baseline = dashboard.summarize(logdata.as_dicts())
    figures = dashboard.summarize(logdata.as_dicts(logdata.VISITS + NOTHING_SHOWN))
    assert figures["totals"]["visits"] == baseline["totals"]["visits"] == 13
    assert figures["totals"]["patients"] == 12
    assert figures["totals"]["signed_visits"] == 12
    assert [w["visits"] for w in figures["weeks"]] == [3, 4, 6]
    for dim, base in zip(figures["equity"], baseline["equity"], strict=True):
        assert dim["rows"] == base["rows"], dim["name"]
    # "65+" and "Asian, Hispanic" only came from the visit with nothing shown.
    age = next(d for d in figures["equity"] if d["name"] == "age_group")
    assert "65+" not in [row["value"] for row in age["rows"]]


def test_headline_tile_counts_only_visits_with_suggestions(tmp_path, clock):
    from tests.console.conftest import STAFF, make_app

    app = make_app(tmp_path / "instance")
    with app.app_context():
        logdata.fill(current_services().db, clock, logdata.VISITS + NOTHING_SHOWN)
    client = app.test_client()
    with client.session_transaction() as session:
        session[STAFF_KEY] = staff_session_token(app, STAFF["program-manager"])
    html = client.get("/console/dashboard").get_data(as_text=True)
    assert "ED visits with suggestions</dt><dd>13</dd>" in html


def linked(program: str | None, encounter: str, patient: str) -> logdata.Visit:
    return logdata.Visit(
        patient,
        encounter,
        "Someone",
        logdata.DR_A,
        logdata.at("2024-05-06T09:00"),
        "2024-05-06T09:00:00Z",
        logdata.demo(None, None, None, None),
        ("prc-consult",),
        (("prc-consult", True, None, None),),
        30,
        (("written", 31),),
        (("accept", 35, {}), ("link", 60, {"program": program})),
    )


PROGRAM_VISITS = (
    linked(FREE_TEXT, "enc-30", "pat-30"),
    linked("somewhere the coach typed", "enc-31", "pat-31"),
    linked("Example Bridge Clinic (555-0100)", "enc-32", "pat-32"),  # a catalog pick
    linked("example bridge clinic", "enc-33", "pat-33"),  # typed, but the catalog's name
    linked("Bridge Clinic", "enc-34", "pat-34"),
)


def test_programs_are_catalog_names_and_free_text_is_other():
    figures = dashboard.summarize(logdata.as_dicts(PROGRAM_VISITS), min_cell=1, programs=CATALOG)
    assert [(p["program"], p["linked"]["text"]) for p in figures["programs"]] == [
        ("Example Bridge Clinic", "2"),
        ("Other", "2"),
        ("Bridge Clinic", "1"),
    ]
    out = json.dumps(figures, default=str)
    assert FREE_TEXT not in out and "Father Mike" not in out and "typed" not in out
    assert "555-0100" not in out


def test_without_a_catalog_every_program_is_other():
    figures = dashboard.summarize(logdata.as_dicts(PROGRAM_VISITS), min_cell=1)
    assert [(p["program"], p["linked"]["text"]) for p in figures["programs"]] == [
        ("Other", "5"),
    ]


def test_the_page_shows_catalog_programs_only(tmp_path, clock):
    from tests.console.conftest import STAFF, make_app

    app = make_app(tmp_path / "instance", DASHBOARD_MIN_CELL=1)
    with app.app_context():
        logdata.fill(current_services().db, clock, PROGRAM_VISITS)
    client = app.test_client()
    with client.session_transaction() as session:
        session[STAFF_KEY] = staff_session_token(app, STAFF["program-manager"])
    html = client.get("/console/dashboard").get_data(as_text=True)
    assert "Father Mike" not in html and "somewhere the coach typed" not in html
    assert '<th scope="row">Example Bridge Clinic</th>' in html  # in the sample catalog
    assert '<th scope="row">Other</th>' in html
