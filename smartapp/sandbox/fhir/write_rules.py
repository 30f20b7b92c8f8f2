"""Write behaviours: what an EHR's FHIR API refuses on writes (shared spec writeback.md,
"EHRs differ: write profiles").

A plain FHIR server takes everything; Epic and Oracle Health (Cerner) refuse some creates,
transactions and conditional create, and put constraints on the shape of a note. The sandbox
plays any of them: a `WriteRules` is asked by the FHIR service on every write.

- `fhir-rest` (default): everything (transaction, batch, conditional create).
- `epic`: 405 for transaction Bundles and for creating ServiceRequest, Task, Provenance and
  Communication; If-None-Exist is ignored (a second POST creates a duplicate); 422 for a
  DocumentReference whose content is not text/plain or whose context.encounter is not an
  existing Encounter (docStatus preliminary, a draft, is fine), and for a MedicationRequest
  that is not a draft.
- `oracle-health`: 405 for transaction Bundles and for creating ServiceRequest, Task and
  MedicationRequest; If-None-Exist ignored; 422 for a DocumentReference without docStatus
  final or context.period.end, and for a Communication whose recipient is not a Practitioner,
  PractitionerRole, Group or Organization (a person or a pool inbox).

"Create" includes a PUT that would create a resource (update-as-create); updates of existing
resources and batch Bundles stay allowed (a batch entry is judged like the same request on
its own, so a batch of GETs always works).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NoReturn

from smartapp.sandbox.fhir.errors import FhirError

FHIR_REST, EPIC, ORACLE_HEALTH = "fhir-rest", "epic", "oracle-health"
BEHAVIOURS = (FHIR_REST, EPIC, ORACLE_HEALTH)

#: Who may receive a Communication at an Oracle Health-like EHR (a person or a pool inbox).
COMMUNICATION_RECIPIENTS = ("Practitioner", "PractitionerRole", "Group", "Organization")


@dataclass(frozen=True)
class WriteRules:
    """What the FHIR API accepts on writes (the default: everything, like HAPI)."""

    behaviour: str = FHIR_REST
    refuse_transactions: bool = False
    conditional_create: bool = True
    refuse_create: frozenset[str] = field(default_factory=frozenset)
    note_text_plain: bool = False  # DocumentReference.content[i].attachment.contentType text/plain
    note_encounter: bool = False  # DocumentReference.context.encounter: an existing Encounter
    note_final: bool = False  # DocumentReference.docStatus must be final
    note_period_end: bool = False  # DocumentReference.context.period.end required
    medication_draft_only: bool = False  # MedicationRequest.status must be draft
    communication_recipient: bool = False  # Communication.recipient: see COMMUNICATION_RECIPIENTS

    def with_switches(
        self,
        *,
        refuse_transactions: bool = False,
        no_conditional_create: bool = False,
        refuse_create: frozenset[str] = frozenset(),
        require_period_end: bool = False,
        require_plain_text: bool = False,
        require_encounter: bool = False,
        require_final: bool = False,
    ) -> WriteRules:
        """These rules made stricter by individual switches (a switch never relaxes a rule)."""
        return replace(
            self,
            refuse_transactions=self.refuse_transactions or refuse_transactions,
            conditional_create=self.conditional_create and not no_conditional_create,
            refuse_create=self.refuse_create | refuse_create,
            note_period_end=self.note_period_end or require_period_end,
            note_text_plain=self.note_text_plain or require_plain_text,
            note_encounter=self.note_encounter or require_encounter,
            note_final=self.note_final or require_final,
        )

    # -- checks the FHIR service makes ------------------------------------------------------

    def check_transaction(self) -> None:
        """405 when transaction Bundles are refused."""
        if self.refuse_transactions:
            raise FhirError(
                405,
                "transaction Bundles are not supported by this server "
                "(send each resource on its own; batch is supported)",
                "not-supported",
            )

    def check_create(self, rtype: str) -> None:
        """405 when `rtype` cannot be created here."""
        if rtype in self.refuse_create:
            raise FhirError(405, f"{rtype} create is not supported", "not-supported")

    def check_shape(
        self,
        rtype: str,
        resource: dict,
        split: Callable[[str], tuple[str | None, str]],
        exists: Callable[[str, str], bool],
    ) -> None:
        """422 (naming the element) when a written resource breaks this EHR's constraints."""
        if rtype == "DocumentReference":
            self._check_note(resource, split, exists)
        elif rtype == "MedicationRequest" and self.medication_draft_only:
            if resource.get("status") != "draft":
                _shape_error(
                    "MedicationRequest.status",
                    f"must be 'draft' (an unsigned order for the physician to sign), "
                    f"not '{resource.get('status')}'",
                )
        elif rtype == "Communication" and self.communication_recipient:
            recipients = resource.get("recipient")
            if not isinstance(recipients, list) or not recipients:
                _shape_error("Communication.recipient", "is required (a person or a pool)")
            for index, recipient in enumerate(recipients):
                ref = recipient.get("reference") if isinstance(recipient, dict) else None
                target = split(ref)[0] if isinstance(ref, str) else None
                if target not in COMMUNICATION_RECIPIENTS:
                    _shape_error(
                        f"Communication.recipient[{index}]",
                        f"must reference one of {', '.join(COMMUNICATION_RECIPIENTS)}",
                    )

    def _check_note(
        self,
        resource: dict,
        split: Callable[[str], tuple[str | None, str]],
        exists: Callable[[str, str], bool],
    ) -> None:
        context = resource.get("context")
        if not isinstance(context, dict):
            context = {}
        if self.note_text_plain:
            for index, content in enumerate(resource.get("content") or []):
                attachment = content.get("attachment") if isinstance(content, dict) else None
                kind = attachment.get("contentType") if isinstance(attachment, dict) else None
                if not isinstance(kind, str) or not kind.strip().lower().startswith("text/plain"):
                    _shape_error(
                        f"DocumentReference.content[{index}].attachment.contentType",
                        f"must be text/plain, not {kind!r}",
                    )
        if self.note_encounter:
            encounters = context.get("encounter") or []
            if isinstance(encounters, dict):
                encounters = [encounters]
            first = encounters[0] if isinstance(encounters, list) and encounters else None
            ref = first.get("reference") if isinstance(first, dict) else None
            if not isinstance(ref, str):
                _shape_error(
                    "DocumentReference.context.encounter", "is required (an existing Encounter)"
                )
            target, ident = split(ref)
            if target != "Encounter" or not exists(target, ident):
                _shape_error(
                    "DocumentReference.context.encounter",
                    f"must reference an existing Encounter ('{ref}' is not one)",
                )
        if self.note_final and resource.get("docStatus") != "final":
            _shape_error(
                "DocumentReference.docStatus",
                f"must be 'final', not {resource.get('docStatus')!r}",
            )
        if self.note_period_end:
            period = context.get("period")
            if not isinstance(period, dict):
                period = {}
            if not period.get("end"):
                _shape_error("DocumentReference.context.period.end", "is required")


def _shape_error(expression: str, problem: str) -> NoReturn:
    raise FhirError(422, f"{expression} {problem}", "business-rule", expression=expression)


PROFILES: dict[str, WriteRules] = {
    FHIR_REST: WriteRules(),
    EPIC: WriteRules(
        behaviour=EPIC,
        refuse_transactions=True,
        conditional_create=False,
        refuse_create=frozenset({"ServiceRequest", "Task", "Provenance", "Communication"}),
        note_text_plain=True,
        note_encounter=True,
        medication_draft_only=True,
    ),
    ORACLE_HEALTH: WriteRules(
        behaviour=ORACLE_HEALTH,
        refuse_transactions=True,
        conditional_create=False,
        refuse_create=frozenset({"ServiceRequest", "Task", "MedicationRequest"}),
        note_final=True,
        note_period_end=True,
        communication_recipient=True,
    ),
}


def rules_for(behaviour: str) -> WriteRules:
    """The rules of a named behaviour (ValueError for an unknown name)."""
    try:
        return PROFILES[behaviour]
    except KeyError:
        raise ValueError(
            f"unknown write behaviour {behaviour!r}; known: {', '.join(BEHAVIOURS)}"
        ) from None
