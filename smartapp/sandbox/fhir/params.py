"""Search parameter definitions and the index values they extract from a resource.

One generic table drives indexing on write (`indexing`), searching, the CapabilityStatement
and the patient compartment: each row names a parameter, its kind and, per resource type, the
element paths it reads. Paths are dotted element names; `name[x]` matches a choice element
(`effective[x]` reads effectiveDateTime and effectivePeriod); lists are flattened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from smartapp.sandbox.fhir.resource_types import (
    R4_RESOURCE_TYPES,
    words,
)

Kind = Literal["token", "reference", "date", "string", "uri"]

#: One index row: (param, system, value, low_ms, high_ms).
IndexRow = tuple[str, str | None, str | None, int | None, int | None]


@dataclass(frozen=True)
class SearchParam:
    """A search parameter: its name, kind, per-type element paths and reference targets."""

    name: str
    kind: Kind
    paths: dict[str, tuple[str, ...]]
    targets: tuple[str, ...] = ()
    description: str = ""
    compiled: dict[str, tuple[tuple[tuple[str, bool], ...], ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        for rtype, paths in self.paths.items():
            self.compiled[rtype] = tuple(compile_path(path) for path in paths)

    def paths_for(self, rtype: str) -> tuple[tuple[tuple[str, bool], ...], ...]:
        """Compiled paths of this parameter on `rtype` (the `*` row applies to every type)."""
        return self.compiled.get(rtype) or self.compiled.get("*") or ()


def compile_path(path: str) -> tuple[tuple[str, bool], ...]:
    return tuple(
        (part[:-3], True) if part.endswith("[x]") else (part, False) for part in path.split(".")
    )


def _p(name: str, kind: Kind, targets: tuple[str, ...] = (), /, **paths: str) -> SearchParam:
    """Row helper: keyword = resource type, value = paths separated by '|'."""
    return SearchParam(
        name=name,
        kind=kind,
        paths={rtype: tuple(p.strip() for p in spec.split("|")) for rtype, spec in paths.items()},
        targets=targets,
    )


_SUBJECT_TYPES = words(
    "CarePlan CareTeam Communication Composition Condition DiagnosticReport DocumentReference "
    "Encounter Flag Goal ImagingStudy MedicationAdministration MedicationDispense "
    "MedicationRequest MedicationStatement Observation Procedure QuestionnaireResponse "
    "ServiceRequest Specimen DeviceRequest RiskAssessment ClinicalImpression List"
)
_ENCOUNTER_TYPES = words(
    "CarePlan CareTeam Communication Composition Condition DiagnosticReport ImagingStudy "
    "MedicationRequest Observation Procedure QuestionnaireResponse ServiceRequest Task "
    "AllergyIntolerance Immunization DeviceRequest ClinicalImpression RiskAssessment Media"
)


def _each(types: Iterable[str], path: str) -> dict[str, str]:
    return {t: path for t in types}


SEARCH_PARAMS: tuple[SearchParam, ...] = (
    # -- every type -----------------------------------------------------------------------
    _p(
        "identifier",
        "token",
        **{"*": "identifier", "DocumentReference": "masterIdentifier|identifier"},
    ),
    _p("_tag", "token", **{"*": "meta.tag"}),
    _p("_security", "token", **{"*": "meta.security"}),
    _p("_profile", "uri", **{"*": "meta.profile"}),
    # -- the patient compartment ---------------------------------------------------------
    _p(
        "patient",
        "reference",
        ("Patient",),
        **_each(_SUBJECT_TYPES, "subject"),
        AllergyIntolerance="patient",
        Immunization="patient",
        Claim="patient",
        ExplanationOfBenefit="patient",
        Coverage="beneficiary",
        Consent="patient",
        Account="subject",
        Appointment="participant.actor",
        Device="patient",
        EpisodeOfCare="patient",
        FamilyMemberHistory="patient",
        RelatedPerson="patient",
        Task="for",
        Provenance="target",
        AuditEvent="entity.what",
        DetectedIssue="patient",
        NutritionOrder="patient",
        VisionPrescription="patient",
        SupplyDelivery="patient",
        ResearchSubject="individual",
    ),
    _p("subject", "reference", **_each(_SUBJECT_TYPES, "subject"), Task="for"),
    _p(
        "encounter",
        "reference",
        ("Encounter",),
        **_each(_ENCOUNTER_TYPES, "encounter"),
        DocumentReference="context.encounter",
        MedicationAdministration="context",
        MedicationDispense="context",
        MedicationStatement="context",
        Claim="item.encounter",
        ExplanationOfBenefit="item.encounter",
    ),
    # -- status and classification -------------------------------------------------------
    _p(
        "status",
        "token",
        **_each(
            words(
                "Encounter Observation MedicationRequest MedicationStatement "
                "MedicationAdministration MedicationDispense ServiceRequest DocumentReference "
                "Task Procedure Immunization CarePlan DiagnosticReport Medication ImagingStudy "
                "Claim ExplanationOfBenefit CareTeam Communication Coverage Device Appointment "
                "Flag Consent Composition QuestionnaireResponse Location EpisodeOfCare"
            ),
            "status",
        ),
    ),
    _p("clinical-status", "token", Condition="clinicalStatus", AllergyIntolerance="clinicalStatus"),
    _p(
        "verification-status",
        "token",
        Condition="verificationStatus",
        AllergyIntolerance="verificationStatus",
    ),
    _p(
        "category",
        "token",
        **_each(
            words(
                "Condition Observation ServiceRequest DocumentReference CarePlan "
                "AllergyIntolerance MedicationRequest MedicationStatement DiagnosticReport "
                "Procedure CareTeam Communication Flag Consent Composition Goal"
            ),
            "category",
        ),
    ),
    _p(
        "code",
        "token",
        Condition="code",
        Observation="code",
        Procedure="code",
        AllergyIntolerance="code",
        ServiceRequest="code",
        DiagnosticReport="code",
        Medication="code",
        Task="code",
        MedicationRequest="medicationCodeableConcept",
        MedicationStatement="medicationCodeableConcept",
        MedicationAdministration="medicationCodeableConcept",
        MedicationDispense="medicationCodeableConcept",
    ),
    _p(
        "medication",
        "reference",
        ("Medication",),
        MedicationRequest="medicationReference",
        MedicationStatement="medicationReference",
        MedicationAdministration="medicationReference",
        MedicationDispense="medicationReference",
    ),
    _p(
        "intent",
        "token",
        MedicationRequest="intent",
        ServiceRequest="intent",
        Task="intent",
        CarePlan="intent",
    ),
    _p(
        "type",
        "token",
        Encounter="type",
        DocumentReference="type",
        Organization="type",
        Composition="type",
        Device="type",
        Location="type",
    ),
    _p("class", "token", Encounter="class"),
    _p(
        "reason-code",
        "token",
        Encounter="reasonCode",
        Procedure="reasonCode",
        ServiceRequest="reasonCode",
        MedicationRequest="reasonCode",
    ),
    _p("value-concept", "token", Observation="valueCodeableConcept"),
    _p("vaccine-code", "token", Immunization="vaccineCode"),
    _p("criticality", "token", AllergyIntolerance="criticality"),
    _p("priority", "token", ServiceRequest="priority", Task="priority"),
    _p("business-status", "token", Task="businessStatus"),
    _p("lifecycle-status", "token", Goal="lifecycleStatus"),
    _p("use", "token", Claim="use", ExplanationOfBenefit="use"),
    _p("gender", "token", Patient="gender", Practitioner="gender"),
    _p("active", "token", Patient="active", Practitioner="active", Organization="active"),
    _p("docstatus", "token", DocumentReference="docStatus"),
    # -- clinical dates ------------------------------------------------------------------
    _p(
        "date",
        "date",
        Observation="effective[x]",
        Condition="onset[x]|recordedDate",
        Encounter="period",
        MedicationRequest="authoredOn",
        MedicationStatement="effective[x]",
        MedicationAdministration="effective[x]",
        MedicationDispense="whenHandedOver",
        AllergyIntolerance="recordedDate",
        ServiceRequest="authoredOn",
        DocumentReference="date",
        Task="authoredOn",
        Provenance="recorded",
        Procedure="performed[x]",
        Immunization="occurrence[x]",
        CarePlan="period",
        DiagnosticReport="effective[x]",
        ImagingStudy="started",
        Composition="date",
        Flag="period",
        Consent="dateTime",
        Appointment="start",
        Communication="sent",
        Claim="created",
        ExplanationOfBenefit="created",
    ),
    _p("onset-date", "date", Condition="onset[x]"),
    _p("recorded-date", "date", Condition="recordedDate"),
    _p("authoredon", "date", MedicationRequest="authoredOn"),
    _p("authored", "date", ServiceRequest="authoredOn", QuestionnaireResponse="authored"),
    _p("authored-on", "date", Task="authoredOn"),
    _p("effective", "date", MedicationStatement="effective[x]"),
    _p("effective-time", "date", MedicationAdministration="effective[x]"),
    _p("whenhandedover", "date", MedicationDispense="whenHandedOver"),
    _p("recorded", "date", Provenance="recorded"),
    _p("period", "date", DocumentReference="context.period", Task="executionPeriod"),
    _p("created", "date", Claim="created", ExplanationOfBenefit="created"),
    _p("started", "date", ImagingStudy="started"),
    _p("birthdate", "date", Patient="birthDate"),
    _p("death-date", "date", Patient="deceasedDateTime"),
    # -- other references ----------------------------------------------------------------
    _p(
        "requester",
        "reference",
        MedicationRequest="requester",
        ServiceRequest="requester",
        Task="requester",
    ),
    _p(
        "performer",
        "reference",
        ServiceRequest="performer",
        Observation="performer",
        Procedure="performer.actor",
        MedicationAdministration="performer.actor",
    ),
    _p(
        "based-on",
        "reference",
        Observation="basedOn",
        Task="basedOn",
        Procedure="basedOn",
        DiagnosticReport="basedOn",
        ServiceRequest="basedOn",
        CarePlan="basedOn",
        Communication="basedOn",
    ),
    _p("focus", "reference", Task="focus"),
    _p("recipient", "reference", Communication="recipient"),
    _p("sender", "reference", Communication="sender"),
    _p("sent", "date", Communication="sent"),
    _p("received", "date", Communication="received"),
    _p("owner", "reference", Task="owner"),
    _p(
        "part-of",
        "reference",
        Task="partOf",
        Encounter="partOf",
        Procedure="partOf",
        Observation="partOf",
        Communication="partOf",
    ),
    _p("target", "reference", Provenance="target"),
    _p("agent", "reference", Provenance="agent.who"),
    _p("entity", "reference", Provenance="entity.what"),
    _p("author", "reference", DocumentReference="author", Composition="author"),
    _p("related", "reference", DocumentReference="context.related"),
    _p("relatesto", "reference", DocumentReference="relatesTo.target"),
    _p("result", "reference", DiagnosticReport="result"),
    _p("request", "reference", MedicationAdministration="request"),
    _p("participant", "reference", Encounter="participant.individual"),
    _p("practitioner", "reference", ("Practitioner",), Encounter="participant.individual"),
    _p("service-provider", "reference", Encounter="serviceProvider"),
    _p("general-practitioner", "reference", Patient="generalPractitioner"),
    _p("organization", "reference", Patient="managingOrganization"),
    _p("partof", "reference", Organization="partOf"),
    _p("claim", "reference", ExplanationOfBenefit="claim"),
    _p("beneficiary", "reference", Coverage="beneficiary"),
    # -- strings ---------------------------------------------------------------------------
    _p(
        "name",
        "string",
        Patient="name",
        Practitioner="name",
        Organization="name",
        Location="name",
        Medication="code.text",
    ),
    _p("family", "string", Patient="name.family", Practitioner="name.family"),
    _p("given", "string", Patient="name.given", Practitioner="name.given"),
    _p("address", "string", Patient="address", Practitioner="address", Organization="address"),
)

PARAMS_BY_NAME: dict[str, SearchParam] = {p.name: p for p in SEARCH_PARAMS}

#: Parameters answered from the resources table itself, not the index.
COLUMN_PARAMS: dict[str, Kind] = {"_id": "token", "_lastUpdated": "date"}


@cache
def params_for_type(rtype: str) -> tuple[SearchParam, ...]:
    """Search parameters that apply to `rtype` (specific rows and the `*` rows)."""
    return tuple(p for p in SEARCH_PARAMS if rtype in p.paths or "*" in p.paths)


def param_for(rtype: str, name: str) -> SearchParam | None:
    """The parameter `name` if it applies to `rtype`."""
    param = PARAMS_BY_NAME.get(name)
    if param and (rtype in param.paths or "*" in param.paths):
        return param
    return None


def types_with_params() -> set[str]:
    """Resource types named explicitly in the table."""
    return {t for p in SEARCH_PARAMS for t in p.paths if t in R4_RESOURCE_TYPES}
