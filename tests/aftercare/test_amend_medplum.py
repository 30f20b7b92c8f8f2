"""The amendment's revoke path at a third-party FHIR server (Medplum's engine, tests/peers.py):
the physician closes the handoff through the lifecycle, exactly as `aftercare.amend` does, and
the outbox cancels the Task, revokes the ServiceRequest and writes a Provenance naming the
physician there too."""

from __future__ import annotations

import pytest

from smartapp.handoffs import lifecycle
from smartapp.handoffs import service as handoffs
from smartapp.writeback.actor import Actor
from tests.app.test_lifecycle_writes import (
    author,
    change_provenances,
    deliver_until_written,
    ids_of,
    medplum_get,
    medplum_referral,
    medplum_search,
)

PHYSICIAN = Actor("physician", "Avery Demo, MD", "Practitioner/demo-ed-physician")


def test_the_physicians_revoke_at_medplum(tmp_path, medplum):
    db, referral_id, client = medplum_referral(tmp_path, medplum, "P21-pt")
    change = lifecycle.close("Patient declined the coach", "Amended by the physician")
    handoffs.record(db, referral_id, change, PHYSICIAN)
    row = deliver_until_written(db, referral_id, client)
    get = medplum_get(medplum)
    ids = ids_of(row)
    task = get(f"Task/{ids['Task']}")
    assert task["status"] == "cancelled"
    assert task["statusReason"]["text"].startswith("Patient declined the coach")
    assert get(f"ServiceRequest/{ids['ServiceRequest']}")["status"] == "revoked"
    (provenance,) = change_provenances(medplum_search(medplum), row)
    assert author(provenance) == {"reference": PHYSICIAN.reference, "display": PHYSICIAN.display}
    with pytest.raises(lifecycle.LifecycleError):  # a second revoke: the handoff is closed
        handoffs.record(db, referral_id, change, PHYSICIAN)
