"""Plain words for a FHIR resource (what it is, its code, its date, its value), so evidence can be
shown to a physician and written into the note without jargon; the patient banner and the equity
categories. Every reader here takes any JSON: an element of the wrong shape reads as absent
(the chart was checked before, see engine/readable.py; this is the second line)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

CLINICAL_DATE_FIELDS = (
    "effectiveDateTime",
    "onsetDateTime",
    "authoredOn",
    "recordedDate",
    "whenHandedOver",
    "effectivePeriod",
    "issued",
    "dateAsserted",
    "recorded",
    "period",
)

TYPE_WORDS = {
    "Condition": "Diagnosis",
    "Observation": "Result",
    "MedicationRequest": "Medication order",
    "MedicationStatement": "Medication (reported)",
    "MedicationAdministration": "Given in the ED",
    "MedicationDispense": "Dispensed",
    "AllergyIntolerance": "Allergy",
    "ServiceRequest": "Order",
    "Encounter": "Visit reason",
}


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def concept_text(concept: Any) -> str:
    """The concept's text, else its first display, else system code."""
    concept = _dict(concept)
    if _text(concept.get("text")):
        return concept["text"]
    codings = [c for c in _list(concept.get("coding")) if isinstance(c, dict)]
    for coding in codings:
        if _text(coding.get("display")):
            return f"{coding['display']} ({_text(coding.get('code'))})"
    return ", ".join(_text(c.get("code")) for c in codings)


def resource_code(resource: dict) -> str:
    # an Encounter is evidence through its reason for visit (rules v2): show that first
    for key in ("code", "medicationCodeableConcept", "vaccineCode", "reasonCode", "type"):
        value = resource.get(key)
        if isinstance(value, dict):
            return concept_text(value)
        if isinstance(value, list) and value:
            return concept_text(value[0])
    return ""


def clinical_date(resource: dict) -> str | None:
    for key in CLINICAL_DATE_FIELDS:
        value = resource.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and _text(value.get("start")):
            return value["start"]
    return None


def value_text(resource: dict) -> str:
    if "valueQuantity" in resource:
        quantity = _dict(resource["valueQuantity"])
        value = quantity.get("value")
        value = value if isinstance(value, int | float) else ""
        return f"{value} {_text(quantity.get('unit'))}".strip()
    for key in ("valueInteger", "valueString", "valueBoolean", "valueDecimal"):
        if isinstance(resource.get(key), str | int | float | bool):
            return str(resource[key])
    if "valueCodeableConcept" in resource:
        return concept_text(resource["valueCodeableConcept"])
    return ""


def status_text(resource: dict) -> str:
    if isinstance(resource.get("status"), str):
        return resource["status"]
    clinical = _list(_dict(resource.get("clinicalStatus")).get("coding"))
    return _text(_dict(clinical[0]).get("code")) if clinical else ""


def describe(resource: dict | None, reference: str) -> dict:
    """A small dict for display: label, code, date, value, status."""
    if resource is None:
        return {
            "reference": reference,
            "label": reference,
            "code": "",
            "date": None,
            "value": "",
            "status": "",
        }
    kind = _text(resource.get("resourceType"))
    return {
        "reference": reference,
        "label": TYPE_WORDS.get(kind, kind),
        "code": resource_code(resource),
        "date": clinical_date(resource),
        "value": value_text(resource),
        "status": status_text(resource),
    }


def in_words(item: dict) -> str:
    """One line: 'Diagnosis: Opioid dependence (F11.20), 2026-11-20, value 11'."""
    parts = [f"{item['label']}: {item['code'] or item['reference']}"]
    if item["value"]:
        parts.append(f"value {item['value']}")
    if item["date"]:
        parts.append(item["date"][:16].replace("T", " "))
    return ", ".join(parts)


US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
AGE_GROUPS = (
    (0, 18, "<18"),
    (18, 25, "18-24"),
    (25, 35, "25-34"),
    (35, 45, "35-44"),
    (45, 55, "45-54"),
    (55, 65, "55-64"),
    (65, 200, "65+"),
)


def demographics(patient: dict, now: datetime) -> dict:
    """Categories for the program's equity figures (race, ethnicity, sex, age group), taken
    from US Core extensions where the chart carries them; never names or dates."""

    def category(url: str) -> str | None:
        for extension in _list(patient.get("extension")):
            if not isinstance(extension, dict) or extension.get("url") != url:
                continue
            parts = [p for p in _list(extension.get("extension")) if isinstance(p, dict)]
            for part in parts:
                if part.get("url") == "text" and _text(part.get("valueString")):
                    return part["valueString"]
            for part in parts:
                if part.get("url") == "ombCategory":
                    return _text(_dict(part.get("valueCoding")).get("display")) or None
        return None

    age_group = None
    birth = _text(patient.get("birthDate"))
    if birth and len(birth) >= 4 and birth[:4].isdigit():
        try:
            born = datetime.fromisoformat(birth if len(birth) == 10 else f"{birth[:4]}-12-31")
            age = now.year - born.year - ((now.month, now.day) < (born.month, born.day))
            age_group = next(label for low, high, label in AGE_GROUPS if low <= age < high)
        except (ValueError, StopIteration):
            age_group = None
    return {
        "race": category(US_CORE_RACE),
        "ethnicity": category(US_CORE_ETHNICITY),
        "sex": _text(patient.get("gender")) or None,
        "age_group": age_group,
    }


def patient_banner(patient: dict) -> dict:
    """Name, birth date, gender and MRN for the banner ("Unknown" where unreadable)."""
    name = _dict((_list(patient.get("name")) or [{}])[0])
    given = [g for g in _list(name.get("given")) if isinstance(g, str)]
    display = _text(name.get("text")) or " ".join([*given, _text(name.get("family"))]).strip()
    mrn = next(
        (
            _text(i.get("value")) or None
            for i in _list(patient.get("identifier"))
            if isinstance(i, dict) and "MR" in str(i.get("type", {}))
        ),
        None,
    )
    return {
        "name": display or "Unknown",
        "birthDate": _text(patient.get("birthDate")) or None,
        "gender": _text(patient.get("gender")) or None,
        "mrn": mrn,
    }
