"""Evidence as a clinician reads it: "COWS total score 11 at 04:04", "Methadone (order of
2026-11-02)", "Pregnant or in the puerperium (77386006), problem list". Pure: a resource of the
chart in, one short phrase and its parts out (the parts fill the pack's words templates, see
`screen.words`). A code without a text or display is named by the title of the pack value set
that holds it (the pack's words, never a code Handoff invents), with the code beside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from smartapp.engine import Chart
from smartapp.screen.describe import clinical_date, value_text

# What a medication resource says happened, for "{what}" in the words templates.
WHAT = {
    "MedicationRequest": "order",
    "MedicationStatement": "reported",
    "MedicationDispense": "dispensed",
    "MedicationAdministration": "given",
    "AllergyIntolerance": "recorded",
    "Condition": "recorded",
    "ServiceRequest": "ordered",
    "Observation": "measured",
}
CODE_KEYS = ("code", "medicationCodeableConcept", "reasonCode", "type")
PROBLEM_LIST = "problem-list-item"
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def codings(concept: Any) -> list[tuple[str, str, str]]:
    """(system, code, display) of each coding of a concept."""
    return [
        (_text(c.get("system")), _text(c.get("code")), _text(c.get("display")))
        for c in _list(_dict(concept).get("coding"))
        if isinstance(c, dict)
    ]


def concept_of(resource: dict, chart: Chart | None) -> dict:
    """The resource's code as a concept (a referenced or contained Medication's code too)."""
    for key in CODE_KEYS:
        value = resource.get(key)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, dict) and (value.get("text") or value.get("coding")):
            return value
    reference = _text(_dict(resource.get("medicationReference")).get("reference"))
    if reference.startswith("#"):
        for contained in _list(resource.get("contained")):
            if isinstance(contained, dict) and f"#{contained.get('id')}" == reference:
                return _dict(contained.get("code"))
    if reference and chart is not None:
        return _dict((chart.get(reference) or {}).get("code"))
    return {}


def name_of(concept: dict, titles: Mapping[tuple[str, str], str], result: bool = False) -> str:
    """A concept's name: its text, its first display, else the pack value set's title, with
    the code in parentheses where the name is not the code itself. A result (`result`) is
    named by its display first (the short flowsheet name) and without its code."""
    coded = codings(concept)
    code = next((c for _, c, _ in coded if c), "")
    display = next((d for _, _, d in coded if d), "")
    text = _text(concept.get("text"))
    name = (display or text) if result else (text or display)
    if result and name:
        return name
    if not name:
        name = next((titles[(s, c)] for s, c, _ in coded if (s, c) in titles), "")
    if not name:
        return code or "not coded"
    return f"{name} ({code})" if code and code not in name else name


def when_text(stamp: str | None, now: datetime) -> str:
    """A time as the physician reads it: "04:04" on the day of `now`, else the date."""
    if not stamp:
        return ""
    if stamp[:10] == now.date().isoformat() and len(stamp) >= 16:
        return stamp[11:16]
    return stamp[:10]


def parts(resource: dict | None, chart: Chart | None, titles: Mapping, now: datetime) -> dict:
    """The phrase's parts: name, date, when, value, what, type (empty where unknown)."""
    if resource is None:
        return {}
    kind = _text(resource.get("resourceType"))
    if kind == "Encounter":
        name = name_of(_dict((_list(resource.get("reasonCode")) or [{}])[0]), titles)
    else:
        name = name_of(concept_of(resource, chart), titles, result=kind == "Observation")
    stamp = clinical_date(resource)
    found = {
        "type": kind,
        "name": name,
        "date": (stamp or "")[:10],
        "when": when_text(stamp, now),
        "value": value_text(resource),
        "what": WHAT.get(kind, ""),
    }
    return {k: v for k, v in found.items() if v}


def is_problem_list(resource: dict) -> bool:
    return any(
        code == PROBLEM_LIST for c in _list(resource.get("category")) for _, code, _ in codings(c)
    )


def phrase(resource: dict | None, reference: str, p: dict) -> str:
    """One phrase for a piece of evidence, e.g. "COWS total score 11 at 04:04"."""
    if resource is None or not p:
        return reference
    kind, name, when, date = p["type"], p.get("name", ""), p.get("when"), p.get("date")
    if kind == "Observation":
        value = f" {p['value']}" if p.get("value") else ""
        return f"{name}{value}" + (f" at {when}" if when else "")
    if kind == "Condition":
        if is_problem_list(resource):
            return f"{name}, problem list" + (f" since {date}" if date else "")
        if when and when != date:  # today: the time it was recorded
            return f"{name}, diagnosed at {when}"
        return f"{name}, diagnosed" + (f" {date}" if date else "")
    if kind == "Encounter":
        return f"Reason for this visit: {name}"
    if kind == "AllergyIntolerance":
        return f"{name} allergy" + (f" (recorded {date})" if date else "")
    if kind == "MedicationAdministration":
        return f"{name} given" + (f" at {when}" if when else "")
    if kind in ("MedicationRequest", "MedicationStatement", "MedicationDispense"):
        what = p.get("what", "")
        return f"{name}, {what} of {date}" if date else f"{name}, {what}"
    if kind == "ServiceRequest":
        return f"{name} ordered" + (f" at {when}" if when else "")
    return f"{name}" + (f", {date}" if date else "")


def unbroken_dates(text: str) -> str:
    """Dates kept on one line (non-breaking hyphens): "2025-10-\n28" reads as two values."""
    return DATE.sub(lambda m: m.group(0).replace("-", "\u2011"), text)


def evidence_item(reference: str, chart: Chart, titles: Mapping, now: datetime) -> dict:
    """A reference as shown: the phrase the physician reads, its parts, and the reference
    (behind a toggle on the page)."""
    resource = chart.get(reference)
    p = parts(resource, chart, titles, now)
    says = unbroken_dates(phrase(resource, reference, p))
    return {"reference": reference, "says": says, "parts": p}


_TITLES: dict[Any, CodeTitles] = {}


class CodeTitles(Mapping[tuple[str, str], str]):
    """(system, code) -> the title of the first pack value set (by id) that holds the code,
    for codes the chart sends without a text or display."""

    def __init__(self, pack: Any) -> None:
        found = getattr(pack, "valuesets", None) or {}
        self.valuesets = [v for _, v in sorted(found.items()) if v.title]
        self.known: dict[tuple[str, str], str | None] = {}

    def __getitem__(self, key: tuple[str, str]) -> str:
        if key not in self.known:
            self.known[key] = next((v.title for v in self.valuesets if v.contains(*key)), None)
        title = self.known[key]
        if title is None:
            raise KeyError(key)
        return title

    @classmethod
    def of(cls, pack: Any) -> CodeTitles:
        """The pack's titles, built once per pack (the pack is immutable once loaded)."""
        key = getattr(pack, "content_hash", None) or id(pack)
        titles = _TITLES.get(key)
        if titles is None:
            titles = cls(pack)
            _TITLES.clear()  # one pack runs at a time; a reloaded pack replaces it
            _TITLES[key] = titles
        return titles

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(())

    def __len__(self) -> int:
        return 0
