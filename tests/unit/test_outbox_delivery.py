"""The outbox's delivery with a fake EHR in memory (no server, no sockets): each profile's way
of writing, retries that create nothing twice, the outcome recorded on the row, and a coach's
update queued while a delivery is under way kept."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from smartapp.db import Database, Referral
from smartapp.fhir.errors import FhirError
from smartapp.writeback import outbox, profiles
from smartapp.writeback.plan import Method, Status
from smartapp.writeback.resources import plan_writes
from smartapp.writeback.task_update import TaskChanges
from tests.unit.referrals import SETTINGS, referral

pytestmark = pytest.mark.unit


class FakeEhr:
    """Enough of FhirClient for the outbox: create, find, update, post_bundle; get and a
    versioned PUT (If-Match, 412 on another version) for the follow-up updates."""

    base = "http://ehr.test/fhir"

    def __init__(self, conditional: bool = True) -> None:
        self.conditional = conditional
        self.store: dict[str, dict] = {}
        self.calls: list[str] = []
        self.fail_next: list[FhirError] = []
        self._ids = itertools.count(1)

    def _fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def _key(self, resource: dict) -> str:
        ident = resource.get("identifier") or [
            {"system": t["system"], "value": t["code"]} for t in resource["meta"].get("tag", [])
        ]
        return f"{resource['resourceType']}|{ident[0]['system']}|{ident[0]['value']}"

    def create(self, resource: dict, if_none_exist: str | None = None) -> dict:
        self.calls.append(f"create {resource['resourceType']}")
        self._fail()
        key = self._key(resource)
        if key in self.store and if_none_exist and self.conditional:
            return {"id": self.store[key]["id"], "status": "200 OK"}
        meta = resource.get("meta", {}) | {"versionId": "1"}
        stored = resource | {"id": str(next(self._ids)), "meta": meta}
        self.store[key] = stored
        return {"id": stored["id"], "status": "201 Created"}

    def find(self, resource_type: str, query: str) -> list[dict]:
        self.calls.append(f"find {resource_type}")
        _, value = query.split("=", 1)
        system, code = value.split("|")
        return [r for k, r in self.store.items() if k == f"{resource_type}|{system}|{code}"]

    def update(self, resource: dict) -> dict:
        self.calls.append(f"update {resource['resourceType']}")
        self._fail()
        key = self._key(resource)
        self.store[key] = resource
        return {"id": resource["id"], "status": "200 OK"}

    def _by_id(self, rtype: str, rid: str) -> tuple[str, dict]:
        return next(
            (k, r) for k, r in self.store.items() if r["resourceType"] == rtype and r["id"] == rid
        )

    def get(self, path: str) -> dict:
        self.calls.append(f"get {path.split('/')[0]}")
        self._fail()
        rtype, rid = path.split("/")[:2]
        return self._by_id(rtype, rid)[1]

    def put(self, body: dict, if_match: str | None = None) -> dict:
        self.calls.append(f"update {body['resourceType']}")
        self._fail()
        key, current = self._by_id(body["resourceType"], body["id"])
        version = int((current.get("meta") or {}).get("versionId", "1"))
        if if_match and if_match != f'W/"{version}"':
            raise FhirError("conflict", status=412)
        meta = (body.get("meta") or {}) | {"versionId": str(version + 1)}
        self.store[key] = body | {"meta": meta}
        return self.store[key]

    def post_bundle(self, bundle: dict) -> dict:
        self.calls.append("transaction")
        self._fail()
        entries = []
        for entry in bundle["entry"]:
            answer = self.create(entry["resource"], entry["request"]["ifNoneExist"])
            self.calls.pop()
            entries.append({"response": {"status": answer["status"]}, "resource": answer})
        return {"entry": entries}


@pytest.fixture
def db(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'handoff.sqlite'}")
    database.create_all()
    return database


def submitted(db: Database, profile: str, lease_for: str | None = None) -> str:
    plan = plan_writes(referral(), SETTINGS, profiles.profile(profile))
    return submit_plan(db, plan, lease_for).id


def submit_plan(db: Database, plan, lease_for: str | None = None):
    row, _ = outbox.submit(
        db,
        visit_key="v1",
        context_id="c1",
        iss="http://ehr.test/fhir",
        patient_id="p1",
        encounter_id="e1",
        user_ref="Practitioner/doc",
        decision={"decisions": [{"kind": "prc-consult", "accepted": True}]},
        plan=plan,
        lease_for=lease_for,
    )
    return row


def deliver(db: Database, referral_id: str, ehr: FakeEhr):
    row = outbox.deliver(db, referral_id, lambda r, force_refresh=False: ehr, confirm_wait=0)
    assert row is not None
    return row


def test_fhir_rest_one_transaction_then_a_retry_creates_nothing(db):
    ehr = FakeEhr()
    referral_id = submitted(db, "fhir-rest")
    row = deliver(db, referral_id, ehr)
    assert row.status == "written" and row.attempts == 1
    assert ehr.calls == ["transaction"]
    assert len(ehr.store) == 6
    assert [w["resourceType"] for w in row.written] == [
        "ServiceRequest",
        "Task",
        "MedicationRequest",
        "MedicationRequest",
        "DocumentReference",
        "Provenance",
    ]
    task = next(r for r in ehr.store.values() if r["resourceType"] == "Task")
    assert task["focus"]["reference"].startswith("urn:uuid:")  # the EHR resolves the bundle's


def test_sign_stores_the_row_leased_and_only_its_owner_delivers_it(db):
    """Sign stores the referral with the delivery's lease taken (one transaction): the
    outbox worker does not see it as due, nobody else can claim it or deliver it as theirs,
    and its owner delivers it without claiming."""
    ehr = FakeEhr()
    referral_id = submitted(db, "fhir-rest", lease_for="sign-owner")
    stored = outbox.get(db, referral_id)
    assert stored is not None and stored.status == "queued"
    assert stored.lease_owner == "sign-owner" and stored.lease_until is not None
    assert referral_id not in outbox.due(db)
    assert outbox.claimed(db, referral_id, "worker") is None
    client_for = lambda r, force_refresh=False: ehr  # noqa: E731
    other = outbox.deliver(db, referral_id, client_for, owner="worker", leased=True)
    assert other is not None and other.status == "queued" and ehr.calls == []
    with pytest.raises(ValueError, match="owner"):
        outbox.deliver(db, referral_id, client_for, leased=True)
    row = outbox.deliver(db, referral_id, client_for, owner="sign-owner", leased=True)
    assert row is not None and row.status == "written" and row.attempts == 1
    assert row.lease_owner is None and ehr.calls == ["transaction"]
    # written: its owner's delivery again finds nothing of its own to write
    again = outbox.deliver(db, referral_id, client_for, owner="sign-owner", leased=True)
    assert again is not None and again.status == "written" and ehr.calls == ["transaction"]


def test_the_row_sign_stored_is_delivered_as_handed_over_while_its_lease_is_live(db, monkeypatch):
    """Sign hands its delivery the row it stored with the lease taken: used as it is, not
    read again, while that lease is live (then no one else can claim the row); a row whose
    lease ran out, or another owner's, is read again, and is then not this owner's to write."""
    from smartapp.writeback import rows

    ehr = FakeEhr()
    client_for = lambda r, force_refresh=False: ehr  # noqa: E731
    reads: list[str] = []
    real_read = rows.leased

    def counted(connection, referral_id: str, owner: str):
        reads.append(owner)
        return real_read(connection, referral_id, owner)

    monkeypatch.setattr(rows, "leased", counted)

    def stored(visit: str):
        plan = plan_writes(referral(), SETTINGS, profiles.profile("fhir-rest"))
        row, _ = outbox.submit(
            db,
            visit_key=visit,
            context_id="c1",
            iss="http://ehr.test/fhir",
            patient_id="p1",
            encounter_id=visit,
            user_ref="Practitioner/doc",
            decision={"decisions": [{"kind": "prc-consult", "accepted": True}]},
            plan=plan,
            lease_for="sign-owner",
        )
        return row

    live = stored("v1")
    assert live.lease_until is not None
    live.lease_until = live.lease_until.replace(tzinfo=None)  # as SQLite gives times back
    done = outbox.deliver(db, live.id, client_for, owner="sign-owner", leased=True, stored=live)
    assert done is not None and done.status == "written" and done.attempts == 1
    assert reads == [] and ehr.calls == ["transaction"]

    ran_out = stored("v2")
    ran_out.lease_until = datetime.now(UTC) - timedelta(seconds=1)
    with db.session() as session:  # meanwhile the outbox worker took the lease
        session.execute(update(Referral).where(Referral.id == ran_out.id).values(lease_owner="w"))
    kept = outbox.deliver(
        db, ran_out.id, client_for, owner="sign-owner", leased=True, stored=ran_out
    )
    assert reads == ["sign-owner"] and ehr.calls == ["transaction"]  # nothing written
    assert kept is not None and kept.status == "queued" and kept.lease_owner == "w"

    other = stored("v3")
    other.lease_owner = "someone-else"  # not this owner's lease: read, then written as stored
    written = outbox.deliver(
        db, other.id, client_for, owner="sign-owner", leased=True, stored=other
    )
    assert reads == ["sign-owner", "sign-owner"]
    assert written is not None and written.status == "written"


def test_a_held_referral_is_stored_without_a_lease(db):
    """Nothing to write to the EHR (a plan kept in Handoff): no lease is taken for it."""
    plan = plan_writes(referral(), SETTINGS, profiles.profile("fhir-rest"))
    kept = plan.to_json()
    for op in kept["operations"]:
        op["mode"] = "local"
    row = submit_plan(db, kept, lease_for="sign-owner")
    assert row.status == "held" and row.lease_owner is None and row.lease_until is None


def test_epic_searches_before_each_create_and_finds_what_landed(db):
    ehr = FakeEhr(conditional=False)
    referral_id = submitted(db, "epic")
    first = deliver(db, referral_id, ehr)
    assert first.status == "written"
    assert ehr.calls == [
        "find MedicationRequest",
        "create MedicationRequest",
        "find MedicationRequest",
        "create MedicationRequest",
        "find DocumentReference",
        "create DocumentReference",
    ]
    # As if the answer had been lost: everything pending again; the search finds each one.
    with db.session() as session:
        row = session.get(type(first), referral_id)
        plan = outbox.plan_of(row)
        for op in plan.rest_creates:
            op.status = Status.PENDING
        outbox.store_plan(row, plan)
        row.status = "queued"
    ehr.calls.clear()
    again = deliver(db, referral_id, ehr)
    assert again.status == "written" and len(ehr.store) == 3
    assert not any(call.startswith("create") for call in ehr.calls)


def test_transient_error_is_queued_with_backoff_and_a_refusal_fails(db):
    ehr = FakeEhr()
    referral_id = submitted(db, "fhir-rest")
    ehr.fail_next = [FhirError("HTTP 503", status=503, transient=True, retry_after=30)]
    row = deliver(db, referral_id, ehr)
    assert (row.status, row.last_error) == ("queued", "HTTP 503")
    wait = row.next_attempt_at - row.updated_at
    assert wait.total_seconds() == pytest.approx(30, abs=1)
    ehr.fail_next = [FhirError("ServiceRequest create is not supported", status=422)]
    with db.session() as session:
        session.get(type(row), referral_id).next_attempt_at = row.updated_at
    refused = deliver(db, referral_id, ehr)
    assert refused.status == "failed" and "not supported" in refused.last_error
    assert ehr.store == {}


def test_an_expired_token_is_refreshed_once(db):
    ehr = FakeEhr()
    referral_id = submitted(db, "fhir-rest")
    ehr.fail_next = [FhirError("expired", status=401)]
    refreshes = []

    def client_for(referral, force_refresh=False):
        refreshes.append(force_refresh)
        return ehr

    row = outbox.deliver(db, referral_id, client_for)
    assert row is not None and row.status == "written"
    assert refreshes == [False, True]


def test_no_credentials_waits_for_a_launch(db):
    referral_id = submitted(db, "fhir-rest")

    def client_for(referral, force_refresh=False):
        raise outbox.CredentialsUnavailable("The launch ended.")

    row = outbox.deliver(db, referral_id, client_for)
    assert row is not None and (row.status, row.last_error) == ("queued", "The launch ended.")


def test_a_coach_update_then_its_put(db):
    ehr = FakeEhr()
    referral_id = submitted(db, "fhir-rest")
    deliver(db, referral_id, ehr)
    changes = TaskChanges(status="accepted", modified_at=referral().signed_at)
    with db.session() as session:
        assert outbox.enqueue_task_update(session, referral_id, changes) is True
    assert outbox.get(db, referral_id).status == "queued"
    ehr.calls.clear()
    row = deliver(db, referral_id, ehr)
    # The transaction's answer gave no version: the update reads the Task first.
    assert row.status == "written" and ehr.calls == ["get Task", "update Task", "create Provenance"]
    task = next(r for r in ehr.store.values() if r["resourceType"] == "Task")
    provenance = [r for r in ehr.store.values() if r["resourceType"] == "Provenance"][-1]
    assert provenance["target"] == [{"reference": f"Task/{task['id']}/_history/2"}]
    service_request = next(r for r in ehr.store.values() if r["resourceType"] == "ServiceRequest")
    assert task["status"] == "accepted"
    assert task["focus"] == {"reference": f"ServiceRequest/{service_request['id']}"}


def test_an_update_queued_during_a_delivery_is_not_lost(db):
    """A coach acts while the first write is under way: the attempt records what it wrote and
    keeps the update queued meanwhile (it used to overwrite the plan with its own copy)."""
    ehr = FakeEhr()
    referral_id = submitted(db, "fhir-rest")
    deliver(db, referral_id, ehr)
    changes = TaskChanges(status="accepted", modified_at=referral().signed_at)

    class CoachMeanwhile(FakeEhr):
        """The same EHR; a coach's change is queued while its first PUT is under way."""

        def get(self, path: str) -> dict:
            return ehr.get(path)

        def create(self, resource: dict, if_none_exist: str | None = None) -> dict:
            return ehr.create(resource, if_none_exist)

        def put(self, body: dict, if_match: str | None = None) -> dict:
            answer = ehr.put(body, if_match)
            if not queued:
                with db.session() as session:
                    queued.append(outbox.enqueue_task_update(session, referral_id, changes))
            return answer

    queued: list[bool] = []
    with db.session() as session:
        outbox.enqueue_task_update(
            session, referral_id, TaskChanges(status="in-progress", modified_at=changes.modified_at)
        )
    row = outbox.deliver(db, referral_id, lambda r, force_refresh=False: CoachMeanwhile())
    assert queued == [True]
    assert row is not None and row.status == "queued"  # the later update still to send
    plan = outbox.plan_of(row)
    updates = [op for op in plan.operations if op.method is Method.UPDATE]
    assert [(u.resource["status"], u.status) for u in updates] == [
        ("in-progress", Status.WRITTEN),
        ("accepted", Status.PENDING),
    ]
