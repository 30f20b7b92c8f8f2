"""What the EHR screens show, read through the FHIR service with the EHR's own access.

Plain data for the templates: the ED track board (patients in a current emergency visit)
and one patient's chart (banner, problems, medications, orders, notes, tasks, results).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from smartapp.sandbox.fhir.access import FullAccess
from smartapp.sandbox.fhir.errors import FhirError
from smartapp.sandbox.fhir.service import FhirService
from smartapp.sandbox.fhirtime import parse_instant

SCENARIO_ID = re.compile(r"^P\d{2}")
_SECTION_LIMIT = 25
_SYSTEM_LABELS = {
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://snomed.info/sct": "SNOMED CT",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://loinc.org": "LOINC",
}


@dataclass
class EdPatient:
    """One row of the ED list."""

    id: str
    name: str
    sex: str
    birth_date: str | None
    age: str
    arrival: datetime | None
    reason: str
    deceased: bool
    encounter_id: str
    mrn: str | None = None


@dataclass
class Item:
    """One line of a chart section."""

    when: str
    title: str
    detail: str = ""
    status: str = ""
    body: str | None = None
    ref: str = ""
    new: bool = False  # written through the FHIR API after seeding (e.g. by Handoff)


@dataclass
class ChartView:
    """A patient's chart page."""

    patient: EdPatient
    allergies: list[Item] = field(default_factory=list)
    problems: list[Item] = field(default_factory=list)
    medications: list[Item] = field(default_factory=list)
    orders: list[Item] = field(default_factory=list)
    notes: list[Item] = field(default_factory=list)
    tasks: list[Item] = field(default_factory=list)
    results: list[Item] = field(default_factory=list)


# -- text helpers -----------------------------------------------------------------------------


def concept(value: object) -> str:
    """Readable text of a CodeableConcept, Coding or Reference."""
    if not isinstance(value, dict):
        return str(value) if value else ""
    if value.get("text"):
        return str(value["text"])
    if value.get("display"):
        return str(value["display"])
    for coding in value.get("coding") or []:
        if coding.get("display"):
            return str(coding["display"])
        if coding.get("code"):
            label = _SYSTEM_LABELS.get(coding.get("system", ""))
            return f"{coding['code']} ({label})" if label else str(coding["code"])
    return str(value.get("code") or value.get("reference") or "")


def human_name(patient: dict) -> str:
    """ "Given Family" of the first name."""
    names = patient.get("name") or []
    if not names:
        return patient.get("id", "")
    name = names[0]
    if name.get("text"):
        return str(name["text"])
    given = " ".join(name.get("given") or [])
    return f"{given} {name.get('family', '')}".strip() or patient.get("id", "")


def when(text: object) -> str:
    """A FHIR date/dateTime as 'YYYY-MM-DD HH:MM UTC' (or the date alone)."""
    if not isinstance(text, str):
        return ""
    if len(text) <= 10:
        return text
    moment = parse_instant(text)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else text


def first_date(resource: dict, *keys: str) -> str:
    """The first present date among `keys` (Period values give their start)."""
    for key in keys:
        value = resource.get(key)
        if isinstance(value, dict):
            value = value.get("start") or value.get("end")
        if isinstance(value, str):
            return value
    return ""


def age_text(birth_date: str | None, at: datetime) -> str:
    """Whole years between the birth date and `at`."""
    if not birth_date or len(birth_date) < 10:
        return "?"
    try:
        born = date.fromisoformat(birth_date[:10])
    except ValueError:
        return "?"
    today = at.date()
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return f"{years} y"


def since(moment: datetime | None, now: datetime) -> str:
    """'2 h 05 min ago' style."""
    if moment is None:
        return ""
    minutes = int((now - moment).total_seconds() // 60)
    if minutes < 0:
        return "in the future"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest:02d} min ago" if hours else f"{rest} min ago"


def note_text(document: dict) -> str | None:
    """Decoded text of a DocumentReference's first text attachment."""
    for content in document.get("content") or []:
        attachment = content.get("attachment") or {}
        data = attachment.get("data")
        if not data:
            continue
        try:
            raw = base64.b64decode(data)
        except (binascii.Error, ValueError):
            return "(attachment is not valid base64)"
        return raw.decode("utf-8", errors="replace")
    return None


def _value(observation: dict) -> str:
    if "valueQuantity" in observation:
        quantity = observation["valueQuantity"]
        number = quantity.get("value")
        if isinstance(number, float):
            number = round(number, 1)
        return f"{number} {quantity.get('unit', '')}".strip()
    for key in ("valueCodeableConcept", "valueString", "valueInteger", "valueBoolean"):
        if key in observation:
            return (
                concept(observation[key])
                if key == "valueCodeableConcept"
                else str(observation[key])
            )
    if observation.get("component"):
        return "; ".join(
            f"{concept(c.get('code'))} {_value(c)}" for c in observation["component"][:3]
        )
    return ""


# -- queries ------------------------------------------------------------------------------------


def _search(service: FhirService, rtype: str, pairs: list[tuple[str, str]]) -> list[dict]:
    with service.db.read() as conn:
        bundle = service.search(conn, rtype, pairs, FullAccess())
    return [e["resource"] for e in bundle.get("entry") or []]


def _ed_row(patient: dict, encounter: dict, now: datetime) -> EdPatient:
    start = parse_instant(first_date(encounter, "period"))
    reason = (
        concept((encounter.get("reasonCode") or [None])[0])
        or concept((encounter.get("type") or [None])[0])
        or concept(encounter.get("class"))
    )
    deceased = bool(patient.get("deceasedBoolean") or patient.get("deceasedDateTime"))
    mrn = next(
        (
            ident.get("value")
            for ident in patient.get("identifier") or []
            if any(c.get("code") == "MR" for c in (ident.get("type") or {}).get("coding", []))
        ),
        None,
    )
    return EdPatient(
        id=patient["id"],
        name=human_name(patient),
        sex=patient.get("gender", "unknown"),
        birth_date=patient.get("birthDate"),
        age=age_text(patient.get("birthDate"), now),
        arrival=start,
        reason=reason,
        deceased=deceased,
        encounter_id=encounter["id"],
        mrn=mrn,
    )


def ed_patients(service: FhirService, now: datetime | None = None) -> list[EdPatient]:
    """Patients in an in-progress emergency encounter: scenarios by id, then by name."""
    now = now or datetime.now(UTC)
    with service.db.read() as conn:
        bundle = service.search(
            conn,
            "Encounter",
            [
                ("status", "in-progress"),
                ("class", "EMER"),
                ("_include", "Encounter:patient"),
                ("_count", "1000"),
            ],
            FullAccess(),
        )
    entries = [e["resource"] for e in bundle.get("entry") or []]
    patients = {r["id"]: r for r in entries if r["resourceType"] == "Patient"}
    current: dict[str, dict] = {}
    for encounter in (r for r in entries if r["resourceType"] == "Encounter"):
        ref = (encounter.get("subject") or {}).get("reference", "")
        pid = ref.removeprefix("Patient/")
        if pid in patients and (
            pid not in current
            or first_date(encounter, "period") > first_date(current[pid], "period")
        ):
            current[pid] = encounter
    rows = [_ed_row(patients[pid], enc, now) for pid, enc in current.items()]
    return sorted(
        rows,
        key=lambda row: (0, row.id, "") if SCENARIO_ID.match(row.id) else (1, row.name, row.id),
    )


class _Chart:
    """Reads one patient's sections; resolves reference names; flags post-seed writes."""

    def __init__(self, service: FhirService, patient_id: str, seeded_at: str) -> None:
        self.service = service
        self.patient_id = patient_id
        self.seeded_at = seeded_at
        self.names: dict[str, str] = {}

    def search(self, rtype: str, *extra: tuple[str, str], count: int = _SECTION_LIMIT) -> list:
        pairs = [("patient", self.patient_id), ("_count", str(count)), *extra]
        return _search(self.service, rtype, pairs)

    def name(self, value: object) -> str:
        """Display of a Reference: its display, else the target's name, code or title."""
        if not isinstance(value, dict):
            return ""
        if value.get("display"):
            return str(value["display"])
        ref = value.get("reference")
        if not isinstance(ref, str) or "/" not in ref:
            return concept(value)
        if ref not in self.names:
            rtype, _, rid = ref.partition("/")
            try:
                with self.service.db.read() as conn:
                    target = self.service.read(conn, rtype, rid, FullAccess()).resource or {}
            except FhirError:
                target = {}
            label = target.get("name")
            if isinstance(label, list):
                label = human_name(target)
            self.names[ref] = str(label or concept(target.get("code")) or ref)
        return self.names[ref]

    def item(
        self,
        resource: dict,
        when_text: str,
        title: str,
        *,
        detail: str = "",
        status: str = "",
        body: str | None = None,
    ) -> Item:
        """An Item for `resource`, flagged new when written after seeding."""
        updated = (resource.get("meta") or {}).get("lastUpdated", "")
        return Item(
            when(when_text),
            title,
            detail=detail,
            status=status,
            body=body,
            ref=f"{resource['resourceType']}/{resource['id']}",
            new=bool(self.seeded_at) and updated > self.seeded_at,
        )


def _joined(*parts: object, sep: str = " · ") -> str:
    return sep.join(str(p) for p in parts if p)


BY_DATE = ("_sort", "-date")
# The medication resource types shown, with where each keeps its date (first found wins).
MEDICATION_DATES = (
    ("MedicationRequest", ("authoredOn",)),
    ("MedicationStatement", ("effectiveDateTime", "effectivePeriod", "dateAsserted")),
    ("MedicationAdministration", ("effectiveDateTime", "effectivePeriod")),
    ("MedicationDispense", ("whenHandedOver",)),
)


def chart_view(
    service: FhirService, patient_id: str, now: datetime, seeded_at: str = ""
) -> ChartView | None:
    """The chart of one patient in the ED (None when not in the ED list)."""
    row = next((p for p in ed_patients(service, now) if p.id == patient_id), None)
    if row is None:
        return None
    chart = _Chart(service, patient_id, seeded_at)
    return ChartView(
        patient=row,
        allergies=_allergies(chart),
        problems=_problems(chart),
        medications=_medications(chart),
        orders=_orders(chart),
        notes=_notes(chart),
        tasks=_tasks(chart),
        results=_results(chart),
    )


def _allergies(chart: _Chart) -> list[Item]:
    return [
        chart.item(
            allergy,
            allergy.get("recordedDate", ""),
            concept(allergy.get("code")),
            status=allergy.get("criticality", ""),
        )
        for allergy in chart.search("AllergyIntolerance")
    ]


def _problems(chart: _Chart) -> list[Item]:
    return [
        chart.item(
            condition,
            first_date(condition, "onsetDateTime", "onsetPeriod", "recordedDate"),
            concept(condition.get("code")),
            status=_joined(
                concept(condition.get("clinicalStatus")),
                concept(condition.get("verificationStatus")),
                sep=" / ",
            ),
        )
        for condition in chart.search("Condition", BY_DATE)
    ]


def _medications(chart: _Chart) -> list[Item]:
    """Requests, statements, administrations and dispenses together, newest first."""
    items = [
        chart.item(
            med,
            first_date(med, *date_keys),
            concept(med.get("medicationCodeableConcept"))
            or chart.name(med.get("medicationReference")),
            detail=rtype.removeprefix("Medication"),
            status=_joined(med.get("status"), med.get("intent"), sep=" "),
        )
        for rtype, date_keys in MEDICATION_DATES
        for med in chart.search(rtype, BY_DATE)
    ]
    items.sort(key=lambda item: item.when, reverse=True)
    return items


def _orders(chart: _Chart) -> list[Item]:
    return [
        chart.item(
            order,
            order.get("authoredOn", ""),
            concept(order.get("code")),
            detail=_joined(
                chart.name(order.get("requester")),
                ", ".join(chart.name(p) for p in order.get("performer") or []),
                order.get("priority"),
                " ".join(n.get("text", "") for n in order.get("note") or []),
            ),
            status=_joined(order.get("status"), order.get("intent"), sep=" "),
        )
        for order in chart.search("ServiceRequest", BY_DATE)
    ]


def _notes(chart: _Chart) -> list[Item]:
    items = []
    for document in chart.search("DocumentReference", BY_DATE):
        attachment = ((document.get("content") or [{}])[0]).get("attachment") or {}
        items.append(
            chart.item(
                document,
                document.get("date", ""),
                attachment.get("title") or concept(document.get("type")) or "Note",
                detail=", ".join(chart.name(a) for a in document.get("author") or []),
                status=_joined(document.get("status"), document.get("docStatus"), sep=" "),
                body=note_text(document),
            )
        )
    return items


def _tasks(chart: _Chart) -> list[Item]:
    return [
        chart.item(
            task,
            task.get("authoredOn") or task.get("lastModified") or "",
            task.get("description") or concept(task.get("code")) or "Task",
            detail=_joined(
                task.get("focus") and f"for {chart.name(task.get('focus'))}",
                task.get("owner") and f"owner {chart.name(task.get('owner'))}",
            ),
            status=_joined(task.get("status"), concept(task.get("businessStatus")), sep=" "),
        )
        for task in chart.search("Task", BY_DATE)
    ]


def _results(chart: _Chart) -> list[Item]:
    return [
        chart.item(
            observation,
            first_date(observation, "effectiveDateTime", "effectivePeriod", "issued"),
            concept(observation.get("code")),
            detail=_value(observation),
            status=observation.get("status", ""),
        )
        for observation in chart.search("Observation", BY_DATE, count=15)
    ]


@dataclass
class PickerPatient:
    """One row of the standalone launch's patient picker."""

    id: str
    name: str
    sex: str
    birth_date: str | None
    age: str
    encounter_id: str | None  # the in-progress ED encounter, if any
    reason: str = ""


def picker_patients(service: FhirService, now: datetime | None = None) -> list[PickerPatient]:
    """Every patient: those in the ED first (with their ED encounter), then the rest by name."""
    now = now or datetime.now(UTC)
    rows = [
        PickerPatient(p.id, p.name, p.sex, p.birth_date, p.age, p.encounter_id, p.reason)
        for p in ed_patients(service, now)
    ]
    in_ed = {row.id for row in rows}
    others = [
        PickerPatient(
            id=patient["id"],
            name=human_name(patient),
            sex=patient.get("gender", "unknown"),
            birth_date=patient.get("birthDate"),
            age=age_text(patient.get("birthDate"), now),
            encounter_id=None,
        )
        for patient in _search(service, "Patient", [("_count", "1000")])
        if patient["id"] not in in_ed
    ]
    return rows + sorted(others, key=lambda row: (row.name, row.id))
