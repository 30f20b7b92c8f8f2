"""`audit verify` and `audit export` read rows fast (tuples, one orjson serialisation each) and
fall back to the exact path for a row that does not prove itself: the same reports, the same
bytes as the exact path, on a generated log with non-ASCII text and on values orjson prints
otherwise (a float like 1e-07) or reads otherwise (an integer past 64 bits, read as a float)."""

from __future__ import annotations

import hashlib
import io
import json
import sys

import pytest

from smartapp.audit import log as referral_log
from smartapp.audit import rows as stored
from smartapp.audit.canonical import canonical_json
from smartapp.audit.csvform import csv_row
from smartapp.audit.export import audit_event, write_export
from smartapp.audit.exportlines import _FastLines, _proven, _proven_as_stored
from smartapp.audit.fastrows import proven, query, stream
from smartapp.audit.models import LogEvent
from smartapp.audit.verify import verify
from smartapp.db import Database
from tests.audit.test_verify import CASES

sys.path.insert(0, "benchmarks")
import scale_log  # noqa: E402

ODD = ({"x": 1e-7}, {"big": 2**70}, {"name": "Zoë ✓ \u2028 \x07", "nested": {"b": 1, "a": [1.5]}})


def a_log(db: Database) -> None:
    scale_log.generate(db, 600, sign=False)
    with db.session() as session:
        for data in ODD:
            referral_log.append(session, "odd", user_ref="urn:staff:zoë", data=data)
    scale_log.generate(db, 150, seed=3, sign=False)


def exact_lines(db: Database, fmt: str) -> str:
    """The export as the exact path writes it (every row decoded and canonicalised apart)."""
    out = io.StringIO()
    with db.session() as session:
        events = list(stored.read(session, stored.select_events().order_by(LogEvent.seq)))
    if fmt == "ndjson":
        for event in events:
            line = json.dumps(audit_event(event), ensure_ascii=False, separators=(",", ":"))
            out.write(line + "\n")
        return out.getvalue()
    import csv

    writer = csv.writer(out)
    writer.writerow(
        ("seq", "time", "type", "user", "iss", "patient", "encounter", "prev_hash", "hash", "data")
    )
    for event in events:
        writer.writerow(csv_row(event))
    return out.getvalue()


def test_most_rows_prove_themselves_and_the_odd_ones_do_not(db):
    a_log(db)
    with db.engine.connect() as connection:
        rows = list(stream(connection, query("sqlite"), chunk=100))
    assert len(rows) == 753
    unproven = [(r[2], r[7]) for r in rows if proven(r) is None]
    assert [type_ for type_, _ in unproven] == ["odd", "odd"], (
        unproven
    )  # 1e-07 printed otherwise, 2**70 read as a float


def test_verify_is_the_same_fast_or_exact(db, signer):
    a_log(db)
    with db.session() as session:
        report = verify(session, [signer.public_key], 100)
    assert report.ok and report.events == 753 and report.head_seq == 753


def test_the_exports_are_the_exact_paths_bytes(db):
    a_log(db)
    for fmt in ("ndjson", "csv"):
        out = io.StringIO()
        with db.session() as session:
            result = write_export(session, out, fmt, None, None)
        assert result.events == 753
        assert out.getvalue() == exact_lines(db, fmt), fmt


def test_a_tampered_log_still_names_the_first_break(db, signer):
    """The fast walk hands over to the exact one at the tampered row."""
    from tests.audit.conftest import fill

    fill(db, 30)
    for name in ("changed", "reordered"):
        case = CASES[name]
        case.tamper(db)
        with db.session() as session:
            report = verify(session, [signer.public_key], 10)
        assert not report.ok and report.first.seq == case.seq


AWKWARD = (
    # (type, user, iss, patient, encounter, data): values JSON escapes or CSV quotes, in every
    # column the fast lines fill, and data naming entities of every kind.
    ("launch", 'Practitioner/"q"', "https://ehr\\x", 'pat,"1"', "enc\n2", {"registration": "a"}),
    ("decision", "urn:staff:zoë", None, "pät-✓", None, {"referral": 'ref "7"', "items": []}),
    ("suggestions-shown", None, None, None, "enc-3", {"suggestions": [{"evidence": [7, "A/b"]}]}),
    (
        "write-attempt",
        "Practitioner/1",
        "https://ehr",
        "p4",
        "e4",
        {"outcome": "queued", "written": [{"resourceType": "DocumentReference", "id": "d,1"}]},
    ),
    ("write-attempt", "Practitioner/1", None, "p5", None, {"outcome": "failed", "error": "x\ty"}),
    ("write-held", None, None, "p6", "e6", {"reason": "no consent", "referral": "r6"}),
    ("audit-read", "urn:staff:ann", None, None, None, {"query": ""}),
    ("audit-read", "urn:staff:ann", None, "p8", None, {"query": 'user="a,b"'}),
    ("audit-export", "os:ann", None, None, None, {"from": None, "format": "csv", "events": 3}),
    ("odd,type", None, None, None, None, {}),
    ('odd"type\n', "u\r", "i,", None, None, {"a": {"b": [1, 2.5, None, True]}}),
    ("@@seq@@", "@@hash@@", None, "@@patient@@", None, {"query": "%s %b %%"}),
    ("50%b", None, None, None, None, {}),
)


def test_awkward_values_give_the_exact_paths_bytes(db):
    """Every column the fast lines fill holds a value that JSON escapes or CSV quotes
    somewhere: the fast lines are still the exact path's bytes."""
    scale_log.generate(db, 30, sign=False)
    with db.session() as session:
        for type_, user, iss, patient, encounter, data in AWKWARD:
            referral_log.append(
                session,
                type_,
                user_ref=user,
                iss=iss,
                patient_id=patient,
                encounter_id=encounter,
                data=data,
            )
    for fmt in ("ndjson", "csv"):
        out = io.StringIO()
        with db.session() as session:
            result = write_export(session, out, fmt, None, None)
        assert result.events == 30 + len(AWKWARD)
        assert out.getvalue() == exact_lines(db, fmt), fmt


def test_a_file_gets_the_same_bytes_and_a_failing_one_stops_the_export(db, tmp_path):
    """A UTF-8 text file gets the lines' bytes as they are (its buffer): the same as text; a
    stream that fails makes the export fail with its error (the writing thread stopped)."""
    a_log(db)
    path = tmp_path / "export.ndjson"
    with db.session() as session, path.open("w", encoding="utf-8", newline="") as out:
        out.write("")  # nothing pending, but the export flushes first all the same
        result = write_export(session, out, "ndjson", None, None)
    assert path.read_bytes() == exact_lines(db, "ndjson").encode()
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("no space left on device")

    with db.session() as session, pytest.raises(OSError, match="no space"):
        write_export(session, Full(), "csv", None, None)


def test_a_formats_pieces_read_a_doubled_percent_as_text():
    """A line is its format's constant pieces joined with the values: `%%` is a `%` of the
    text (an event type "50%b" is not a hole), `%b` a hole."""
    from smartapp.audit.exportlines import _pieces

    assert _pieces(b'{"t":"50%%b","v":%b,"p":"%%"}%b') == (b'{"t":"50%b","v":', b',"p":"%"}', b"")


def test_a_referral_is_an_entity_by_its_identifier_unless_resources_were_written():
    from smartapp.audit.auditevent import data_references

    referral = {
        "identifier": {"system": "urn:handoff:referral", "value": "7"},
        "display": "Handoff referral",
    }
    assert list(data_references("decision", {"referral": 7})) == [(referral, "4")]
    written = {"referral": "7", "written": [{"resourceType": "DocumentReference", "id": "d"}]}
    assert list(data_references("write-attempt", written)) == [
        ({"reference": "DocumentReference/d"}, "3")
    ]
    assert list(data_references("launch", {"referral": "7"})) == []


def test_new_events_store_their_data_as_the_canonical_form_writes_it(db):
    """The data column's text is the data's part of the hashed document, keys sorted at every
    depth (so the export proves a row without parsing its data); the values are unchanged."""
    data = {"zeta": 1, "alpha": {"y": [3, {"b": 1, "a": 2}], "x": "Zoë"}}
    with db.session() as session:
        referral_log.append(session, "launch", user_ref="urn:staff:ann", data=data)
    with db.engine.connect() as connection:
        text = connection.exec_driver_sql("SELECT data FROM log_event").scalar_one()
    assert text == canonical_json(data)
    with db.session() as session:
        assert session.query(LogEvent).one().data == data


def unsorted(text: str) -> str:
    """A data column's text with every object's keys in reverse order: as an earlier version
    stored it (in the order the app built the data), the same JSON values."""

    def reverse(value):
        if isinstance(value, dict):
            return {key: reverse(value[key]) for key in reversed(list(value))}
        if isinstance(value, list):
            return [reverse(item) for item in value]
        return value

    return json.dumps(reverse(json.loads(text)), ensure_ascii=False, separators=(",", ":"))


def test_a_log_stored_unsorted_before_exports_the_same_bytes(db):
    """Rows whose data was stored in the app's own key order (before the data was stored
    sorted) prove themselves the long way; the lines are still the exact path's, and the
    stored text is tried again further on, where the rows are the new ones."""
    scale_log.generate(db, 1300, sign=False)
    with db.engine.begin() as connection:
        old = connection.exec_driver_sql("SELECT seq, data FROM log_event WHERE seq <= 40").all()
        for seq, text in old:
            connection.exec_driver_sql(
                "UPDATE log_event SET data = ? WHERE seq = ?", (unsorted(text), seq)
            )
    changed = [seq for seq, text in old if unsorted(text) != text]
    assert len(changed) > 20  # most rows' data has several keys
    lines = _FastLines()
    with db.engine.connect() as connection:
        made = [lines.row_line(row) for row in stream(connection, query("sqlite"), chunk=100)]
    assert None not in made
    assert lines.misses == 0  # the stored text proves the later rows again
    for fmt in ("ndjson", "csv"):
        out = io.StringIO()
        with db.session() as session:
            result = write_export(session, out, fmt, None, None)
        assert result.events == 1300 and not result.broken
        assert out.getvalue() == exact_lines(db, fmt), fmt


def test_a_stored_texts_changed_value_is_not_proven_by_it(db):
    """A data text changed after the fact (a value; its keys still sorted) hashes to nothing:
    the row goes the exact way, as before (its line the exact path's; `verify` names it)."""
    scale_log.generate(db, 50, sign=False)
    with db.engine.begin() as connection:
        seq = connection.exec_driver_sql(
            "SELECT max(seq) FROM log_event WHERE type = 'launch'"
        ).scalar_one()
        connection.exec_driver_sql(
            "UPDATE log_event SET data = replace(data, 'epic', 'EPIC') WHERE seq = ?", (seq,)
        )
    with db.engine.connect() as connection:
        rows = {row[0]: row for row in stream(connection, query("sqlite"))}
    assert _proven_as_stored(rows[seq]) is None and _proven(rows[seq]) is None
    assert _proven_as_stored(rows[seq - 1]) is not None
    assert _FastLines().row_line(rows[seq]) is None
    out = io.StringIO()
    with db.session() as session:
        result = write_export(session, out, "ndjson", None, None)
    assert result.events == 50 and out.getvalue() == exact_lines(db, "ndjson")


def test_an_export_made_by_worker_processes_is_the_same(db, tmp_path, monkeypatch):
    """`--jobs`: the parts made by forked workers and written in chain order give the same
    bytes and result as one process, filtered or not, damaged rows named; the command line
    makes it so by default."""
    from smartapp.audit import export_jobs
    from smartapp.audit.export import export

    monkeypatch.setattr(export_jobs, "PART_EVENTS", 97)  # many parts, uneven
    monkeypatch.setattr(export_jobs, "MIN_PARTS_PER_JOB", 1)  # workers even for 8 parts
    a_log(db)
    with db.engine.begin() as connection:  # a damaged row: its time is not a time
        connection.exec_driver_sql("UPDATE log_event SET at = 'garbage' WHERE seq = 300")
    kinds = [LogEvent.type.in_(("launch", "decision"))]
    for fmt in ("ndjson", "csv"):
        for where in ((), kinds):
            alone, parts = io.StringIO(), io.StringIO()
            with db.session() as session:
                one = write_export(session, alone, fmt, None, None, where)
            many = export_jobs.write_export_jobs(db, parts, fmt, None, None, where, jobs=2)
            assert parts.getvalue() == alone.getvalue() and many == one, (fmt, where)
            if not where:
                assert many.broken == (300,)
    empty = export_jobs.write_export_jobs(db, io.StringIO(), "csv", None, None, [LogEvent.seq < 0])
    assert empty.events == 0 and empty.first_seq is None
    path = tmp_path / "log.ndjson"
    with path.open("w", encoding="utf-8", newline="") as out:
        logged = export(db, out, fmt="ndjson", start=None, end=None, user="os:ann", jobs=3)
    assert logged.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert logged.events == 752 and logged.broken == (300,)


def test_an_export_too_small_for_workers_is_made_by_this_process_alone(db, monkeypatch):
    """Below `MIN_PARTS_PER_JOB` parts a worker, fewer workers: none at all for a small log
    (no fork, no pool), the same bytes and result; at the threshold, workers again."""
    from smartapp.audit import export_jobs

    monkeypatch.setattr(export_jobs, "PART_EVENTS", 97)
    a_log(db)  # 753 events: 8 parts
    pools: list[int] = []
    real_pool = export_jobs.ProcessPoolExecutor

    def counted_pool(jobs: int, **options):
        pools.append(jobs)
        return real_pool(jobs, **options)

    monkeypatch.setattr(export_jobs, "ProcessPoolExecutor", counted_pool)
    alone = io.StringIO()
    with db.session() as session:
        one = write_export(session, alone, "ndjson", None, None)
    for minimum, expected in ((5, []), (4, [2]), (2, [2, 4])):
        monkeypatch.setattr(export_jobs, "MIN_PARTS_PER_JOB", minimum)
        out = io.StringIO()
        made = export_jobs.write_export_jobs(db, out, "ndjson", None, None, jobs=4)
        assert out.getvalue() == alone.getvalue() and made == one and made.events == 753
        assert pools == expected, minimum


def test_an_export_gets_a_worker_per_hundred_thousand_events():
    """With the shipped sizes (parts of 10,000 events, 10 parts a worker): a log of 100k
    events is exported by this process alone, 1M by every core (up to the jobs asked)."""
    from smartapp.audit.export_jobs import workers_for

    sizes = (0, 100_000, 190_000, 200_000, 1_000_000)
    assert [workers_for(n, 4) for n in sizes] == [1, 1, 1, 2, 4]
    assert workers_for(1_000_000, 2) == 2 and workers_for(1_000_000, 1) == 1


def test_the_parts_wait_in_shared_memory_only_where_it_has_room(monkeypatch):
    """A container's /dev/shm (often 64 MB) cannot hold the parts that wait at once: they go
    to the temporary folder then, as they do where there is no /dev/shm."""
    from types import SimpleNamespace

    from smartapp.audit import export_jobs

    def free(megabytes: int):
        return lambda path: SimpleNamespace(f_bavail=megabytes * 256, f_frsize=4096)

    monkeypatch.setattr(export_jobs.os, "access", lambda path, mode: True)
    monkeypatch.setattr(export_jobs.os, "statvfs", free(64))
    assert export_jobs._parts_folder(2) is None
    monkeypatch.setattr(export_jobs.os, "statvfs", free(4096))
    assert export_jobs._parts_folder(2) == "/dev/shm"
    assert export_jobs._parts_folder(200) is None

    def missing(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(export_jobs.os, "statvfs", missing)
    assert export_jobs._parts_folder(2) is None


def test_the_command_uses_every_core_up_to_four(monkeypatch):
    """Beyond a few workers the one process that hashes and writes is the bottleneck, and each
    worker holds a database connection: the default stops at 4."""
    from smartapp.audit import export_jobs

    for cores, jobs in ((1, 1), (2, 2), (64, 4)):
        monkeypatch.setattr(export_jobs.os, "sched_getaffinity", lambda _, n=cores: set(range(n)))
        assert export_jobs.default_jobs() == jobs
