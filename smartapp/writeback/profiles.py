"""Write profiles: what each kind of EHR accepts (shared spec writeback.md, "EHRs differ").

A profile says which resources go to the EHR over REST, which stay in Handoff's own store (the
referral log and the coach worklist show them), and the shape rules the EHR enforces. Profiles
are data; a registration in launch/ names one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WriteProfile:
    name: str
    # One transaction Bundle (all or nothing) instead of one request per resource.
    transaction: bool
    # The EHR honours If-None-Exist; otherwise Handoff searches by identifier before a retry.
    conditional_create: bool
    # Resource types written over REST; every other planned resource is kept in Handoff.
    rest_types: frozenset[str]
    # The warm handoff's channel at the EHR: a Task, a Communication to a coach pool, or none
    # (then the Task lives in Handoff's coach worklist only).
    handoff_channel: str | None
    # docStatus the EHR requires (None: the registration's choice).
    forced_doc_status: str | None = None
    # Where the EHR takes no ServiceRequest, how the order reaches it instead (shown to users).
    order_route: str = "rest"
    # Types Handoff changes after the first writes (read-modify-write with If-Match): the Task
    # through the lifecycle, the ServiceRequest when it ends (completed / revoked).
    update_types: frozenset[str] = frozenset({"Task", "ServiceRequest"})
    # A decision aid's score (the COWS calculator's total, smartapp.aids) may be created as an
    # Observation at the EHR; otherwise it is kept in Handoff (and still counts for the visit).
    observation_create: bool = False

    def scopes(self, context: str = "patient") -> list[str]:
        """The SMART v2 scopes the writes need: create and search (by Handoff's identifier)
        for every REST type; read and update too for the types Handoff updates (a versioned
        PUT re-reads after a conflict). `context`: `patient` in a launch, `system` for SMART
        Backend Services."""
        scopes = [
            f"{context}/{t}.{'crus' if t in self.update_types else 'cs'}"
            for t in sorted(self.rest_types)
        ]
        if self.observation_create:
            scopes.append(f"{context}/Observation.cs")
        return scopes


PROFILES: dict[str, WriteProfile] = {
    "fhir-rest": WriteProfile(
        name="fhir-rest",
        transaction=True,
        conditional_create=True,
        rest_types=frozenset(
            {"ServiceRequest", "DocumentReference", "Task", "Provenance", "MedicationRequest"}
        ),
        handoff_channel="task",
        observation_create=True,
    ),
    # Epic: notes over REST (text/plain, existing encounter, preliminary = draft); no
    # ServiceRequest, Task or Provenance create; no conditional create; orders come in as
    # unsigned orders through CDS Hooks, which the physician signs in Epic.
    "epic": WriteProfile(
        name="epic",
        transaction=False,
        conditional_create=False,
        rest_types=frozenset({"DocumentReference", "MedicationRequest"}),
        handoff_channel=None,
        order_route="cds-hooks",
    ),
    # Oracle Health: ServiceRequest read only; notes need docStatus final and period.end;
    # Communication to a coach pool carries the warm handoff; Provenance create.
    "oracle-health": WriteProfile(
        name="oracle-health",
        transaction=False,
        conditional_create=False,
        rest_types=frozenset({"DocumentReference", "Communication", "Provenance"}),
        handoff_channel="communication",
        forced_doc_status="final",
        order_route="kept",
    ),
}


def profile(name: str) -> WriteProfile:
    return PROFILES[name]
