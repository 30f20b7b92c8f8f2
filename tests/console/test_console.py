"""The auditor console over a realistic log: search filters, paging, one event's detail with
its chain status, exports that parse, and an `audit-read` for every page that shows events."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime

import pytest
from fhirclient.models.auditevent import AuditEvent
from sqlalchemy import select, update

from smartapp.audit.canonical import event_hash
from smartapp.audit.export import csv_records
from smartapp.audit.models import LogEvent
from smartapp.services import current_services
from tests.console import logdata


def log_events(app, type_: str | None = None) -> list[LogEvent]:
    with app.app_context(), current_services().db.session() as session:
        query = select(LogEvent).order_by(LogEvent.seq)
        if type_:
            query = query.where(LogEvent.type == type_)
        rows = list(session.scalars(query))
        session.expunge_all()
    return rows


def found(html: str) -> int:
    """The number of matching events the page reports."""
    if "No event matches." in html:
        return 0
    match = re.search(r"Events \d+–\d+ of (\d+), newest first", html)
    assert match, html[:2000]
    return int(match.group(1))


def seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'aria-label="Event (\d+) details"', html)]


FIXTURE_EVENTS = len(logdata.planned())


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, FIXTURE_EVENTS),
        ({"type": "decision"}, 12),
        ({"type": "suggestions-shown"}, 14),
        ({"outcome": "accepted"}, 10),
        ({"outcome": "declined"}, 6),
        ({"outcome": "written"}, 8),
        ({"outcome": "queued"}, 2),
        ({"outcome": "failed"}, 1),
        ({"outcome": "held"}, 1),
        ({"kind": "moud-continue"}, 2),  # P08: shown once, decided once
        ({"kind": "moud-buprenorphine", "outcome": "declined"}, 3),
        ({"kind": "naloxone-kit", "outcome": "written"}, 0),  # writes carry no kind
        ({"user": logdata.DR_B, "type": "decision"}, 5),
        ({"user": logdata.COACH}, 26),
        ({"patient": "pat-01-c4e2", "type": "decision"}, 2),
        ({"patient": "pat-12-aa07"}, 6),  # launch, shown twice, decision, held, accept
        ({"from": "2024-05-06", "to": "2024-05-12", "type": "suggestions-shown"}, 4),
        ({"from": "2024-05-13", "type": "decision", "outcome": "declined"}, 2),
        ({"to": "2024-04-30", "type": "launch"}, 2),
    ],
)
def test_search_filters(app, auditor, query, expected):
    response = auditor.get("/console/events", query_string=query)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert found(html) == expected
    assert len(seqs(html)) == min(expected, 50)


def test_results_are_the_right_events(app, auditor):
    html = auditor.get(
        "/console/events", query_string={"kind": "moud-buprenorphine", "outcome": "declined"}
    ).get_data(as_text=True)
    by_seq = {e.seq: e for e in log_events(app)}
    shown = [by_seq[s] for s in seqs(html)]
    assert [e.patient_id for e in shown] == ["pat-01-c4e2", "pat-07-d2e5", "pat-03-e08d"]
    assert all(e.type == "decision" for e in shown)
    assert "moud-buprenorphine declined (Already in treatment elsewhere)" in html


def test_paging_is_newest_first_without_overlap(app, auditor):
    app.config["CONSOLE_PAGE_SIZE"] = 10
    first = auditor.get("/console/events", query_string={"user": logdata.COACH}).get_data(
        as_text=True
    )
    third = auditor.get(
        "/console/events", query_string={"user": logdata.COACH, "page": 3}
    ).get_data(as_text=True)
    assert "Events 1–10 of 26" in first and "Events 21–26 of 26" in third
    assert seqs(first) == sorted(seqs(first), reverse=True)
    assert len(seqs(third)) == 6 and max(seqs(third)) < min(seqs(first))
    assert "page=2" in first and "Page 1 of 3" in first
    # Python-side filters (outcome) page the same way.
    second = auditor.get(
        "/console/events", query_string={"outcome": "accepted", "page": 2}
    ).get_data(as_text=True)
    assert "Page 2 is past the end: 10 events match." in second and seqs(second) == []


def test_bad_filters_are_named_and_ignored(auditor):
    html = auditor.get(
        "/console/events", query_string={"from": "last tuesday", "outcome": "maybe"}
    ).get_data(as_text=True)
    assert "From: &#39;last tuesday&#39; is not a date" in html
    assert "Unknown outcome" in html
    assert found(html) == FIXTURE_EVENTS


def test_every_page_that_shows_events_is_logged(app, auditor):
    before = len(log_events(app, "audit-read"))
    auditor.get("/console/events", query_string={"patient": "pat-03-e08d", "type": "decision"})
    decision = next(e for e in log_events(app, "decision") if e.patient_id == "pat-03-e08d")
    auditor.get(f"/console/events/{decision.seq}")
    reads = log_events(app, "audit-read")[before:]
    assert [(r.user_ref, r.patient_id) for r in reads] == [
        (logdata.AUDITOR, "pat-03-e08d"),
        (logdata.AUDITOR, "pat-03-e08d"),
    ]
    assert reads[0].data["query"] == ("log search (patient=pat-03-e08d, type=decision), page 1")
    assert reads[1].data["query"] == f"event #{decision.seq} (decision)"
    # The reads are in the chain like any event, and show up in the next search.
    html = auditor.get("/console/events", query_string={"type": "audit-read"}).get_data(
        as_text=True
    )
    assert found(html) == before + 2  # this search is logged once it has run


def test_event_detail(app, auditor):
    decision = next(e for e in log_events(app, "decision") if e.patient_id == "pat-09-2b94")
    response = auditor.get(f"/console/events/{decision.seq}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for text in (
        f"Event #{decision.seq}",
        "2024-05-14T15:30:00.000000Z",  # arrival 13:00 + 150 min
        logdata.DR_B,
        logdata.ISS,
        "pat-09-2b94",
        "enc-09-85f3",
        decision.hash,
        decision.prev_hash,
        "recomputes",
        f"matches event #{decision.seq - 1}",
        "The chain verifies up to this event.",
        "has a kit at home from the pharmacy",  # the physician's words, for the auditor
    ):
        assert text in html, text
    # The data, pretty-printed: one key per line, sorted, as JSON.
    pre = re.search(r'<pre class="data"[^>]*>(.*?)</pre>', html, re.S).group(1)
    assert json.loads(pre.replace("&#34;", '"').replace("&quot;", '"')) == decision.data
    assert '\n  "consult_mode": "in-person",' in pre.replace("&#34;", '"')
    assert auditor.get("/console/events/99999").status_code == 404


def test_chain_status_on_index_and_detail(app, auditor):
    html = auditor.get("/console/events").get_data(as_text=True)
    assert "Chain verified." in html
    assert f"{FIXTURE_EVENTS} events" in html  # verified before this read is appended
    # Someone with database access rewrites a decision: the console shows where it broke.
    victim = next(e for e in log_events(app, "decision") if e.patient_id == "pat-06-41d8")
    with app.app_context(), current_services().db.session() as session:
        session.execute(
            update(LogEvent)
            .where(LogEvent.seq == victim.seq)
            .values(data=victim.data | {"decisions": []})
        )
    html = auditor.get("/console/events").get_data(as_text=True)
    assert "Chain broken." in html and f"BROKEN at #{victim.seq} (decision)" in html
    detail = auditor.get(f"/console/events/{victim.seq}").get_data(as_text=True)
    assert "does not recompute" in detail
    assert "The chain does not verify up to this event." in detail
    earlier = auditor.get(f"/console/events/{victim.seq - 1}").get_data(as_text=True)
    assert "The chain verifies up to this event." in earlier


def test_export_ndjson_download(app, auditor):
    response = auditor.get(
        "/console/export",
        query_string={
            "format": "ndjson",
            "from": "2024-05-06",
            "to": "2024-05-12",
            "type": "decision",
        },
    )
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="handoff-referral-log-2024-05-06-2024-05-12.ndjson"'
    )
    lines = response.get_data(as_text=True).splitlines()
    # Every filter applies (issue 9 item 13): the decisions in the range, as the page shows.
    in_range = [
        p
        for p in logdata.planned()
        if datetime(2024, 5, 6, tzinfo=UTC) <= p.when < datetime(2024, 5, 13, tzinfo=UTC)
        and p.type == "decision"
    ]
    assert len(in_range) == 4
    assert len(lines) == len(in_range) == int(response.headers["X-Handoff-Export-Events"])
    for line in lines:
        parsed = AuditEvent(json.loads(line), strict=True)
        assert parsed.recorded.datetime.tzinfo is not None
    # The export logged itself: who, what range, how many, the digest of what was sent.
    export = log_events(app, "audit-export")[-1]
    assert export.user_ref == logdata.AUDITOR
    assert export.data["sha256"] == response.headers["X-Handoff-Export-Sha256"]
    assert (export.data["from"], export.data["to"]) == (
        "2024-05-06T00:00:00.000000Z",
        "2024-05-13T00:00:00.000000Z",
    )
    assert export.data["events"] == len(lines) and export.data["out"] == "console download"


def test_export_csv_download_recomputes(app, auditor):
    response = auditor.get("/console/export", query_string={"format": "csv"})
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert 'filename="handoff-referral-log-all.csv"' in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    records = csv_records(io.StringIO(text))
    assert len(records) == FIXTURE_EVENTS
    assert all(event_hash(r) == r.hash for r in records)
    assert next(csv.reader(io.StringIO(text)))[0] == "seq"


def test_export_refuses_unknown_formats(auditor):
    assert auditor.get("/console/export", query_string={"format": "xlsx"}).status_code == 400


def test_export_links_carry_the_date_range(auditor):
    html = auditor.get(
        "/console/events",
        query_string={"from": "2024-05-06", "to": "2024-05-12", "patient": "pat-04-3f7b"},
    ).get_data(as_text=True)
    links = re.findall(r'href="(/console/export[^"]*)"', html)
    assert len(links) == 2
    for link in links:
        assert "from=2024-05-06" in link and "to=2024-05-12" in link
        assert "patient=pat-04-3f7b" in link  # issue 9 item 13: the export is what is filtered


def test_console_pages_keep_the_csp(auditor, manager):
    for client, url in (
        (auditor, "/console/events"),
        (auditor, "/console/events/3"),
        (manager, "/console/dashboard"),
    ):
        response = client.get(url)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        html = response.get_data(as_text=True)
        assert "<script" not in html and "<style" not in html
        assert not re.search(r"\sstyle=", html)
        assert not re.search(r"\son[a-z]+=", html)
