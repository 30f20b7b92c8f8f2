"""A chart from an EHR that may send malformed data: what can be read is evaluated, and what
cannot is named, never silently dropped and never a crash.

Each resource is checked against the shape of the elements Handoff reads (the rules, the
evidence words, the patient banner). When an element has the wrong shape:

- in the Patient or an Encounter (the context the screen is about) the element is ignored:
  left out, the resource would take the whole screen with it (a name that is a string costs
  the banner its name, not the patient's age);
- in any other resource the resource is left out: half read, it could count when it should
  not (a refuted diagnosis whose status is unreadable) or hide what it is (methadone).

Each becomes an :class:`Unreadable` naming the resource and the element, never its content,
so its notice can go to the screen and to the log. Texts longer than a limit are cut, with a
marker holding their length and SHA-256, so one resource cannot flood the screen or the log.

Pure: plain dicts in, a :class:`Chart` and notices out. The strict readers (chart_input.py) stay
as they are for rule test cases, where malformed input is an author's error.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .chart import MEDICATION_TYPES, Chart, ChartItem
from .fhir import parse_datetime, status_code, youngest_birth_date

#: What the screen shows of one text at most (setting RESOURCE_TEXT_MAX_CHARS overrides it).
DEFAULT_TEXT_LIMIT = 1000
#: How many notices name a resource each, at most (setting CHART_MAX_NOTICES overrides it).
DEFAULT_NOTICE_LIMIT = 20
#: A FHIR id (R4 ``id`` datatype).
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}\Z")
#: Resources whose unreadable elements are ignored rather than the resource left out.
CONTEXT_TYPES = frozenset({"Patient", "Encounter"})
#: JSON nesting deeper than this is not a resource Handoff reads (FHIR needs far fewer).
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A resource left out, or an element of one ignored, because it could not be read."""

    where: str  # "Condition/abc", or "a Condition (item 3)" when it has no usable id
    resource_type: str
    problem: str  # "code is not a CodeableConcept": names the element, never its content
    left_out: bool = True

    @property
    def notice(self) -> str:
        """The sentence for the screen and the log (no PHI: names and shapes only)."""
        if self.left_out:
            return f"{self.where} could not be read and was left out: {self.problem}."
        return f"{self.where}: {self.problem}; Handoff ignored that element."


@dataclass(frozen=True, slots=True)
class TextCut:
    """Texts of one resource cut to the limit (each keeps its length and SHA-256)."""

    where: str
    count: int
    limit: int

    @property
    def notice(self) -> str:
        texts = "a text" if self.count == 1 else f"{self.count} texts"
        return (
            f"{self.where}: {texts} longer than {self.limit} characters "
            "cut for the screen and the log (marked with the full text's length and SHA-256)."
        )


@dataclass
class ReadableChart:
    """The chart of what could be read, and what could not (in the order found)."""

    chart: Chart
    unreadable: list[Unreadable] = field(default_factory=list)
    cuts: list[TextCut] = field(default_factory=list)
    notice_limit: int = DEFAULT_NOTICE_LIMIT

    @property
    def notices(self) -> list[str]:
        """One sentence per problem, for the screen and the log; past ``notice_limit``, one
        sentence counts the rest by type (a chart of 10,000 bad resources is one line more)."""
        found = [(u.resource_type, u.notice) for u in self.unreadable]
        found += [(c.where.split("/")[0], c.notice) for c in self.cuts]
        if len(found) <= self.notice_limit:
            return [notice for _type, notice in found]
        shown, rest = found[: self.notice_limit - 1], found[self.notice_limit - 1 :]
        counts = Counter(rtype or "not a resource" for rtype, _notice in rest)
        by_type = ", ".join(f"{rtype}: {n:,}" for rtype, n in sorted(counts.items()))
        more = f"{len(rest):,} more resources could not be read in full ({by_type})."
        return [notice for _type, notice in shown] + [more]

    @property
    def incomplete_types(self) -> set[str]:
        """Resource types of which at least one resource was left out."""
        return {u.resource_type for u in self.unreadable if u.left_out}


def readable_chart(
    resources: Iterable[Any],
    text_limit: int = DEFAULT_TEXT_LIMIT,
    notice_limit: int = DEFAULT_NOTICE_LIMIT,
) -> ReadableChart:
    """A chart of the readable resources of a list (as an EHR's searches return them).

    Raises ChartError only for what no leaving-out can mend: resources of two patients, or
    an OperationOutcome reporting a failed search.
    """
    unreadable: list[Unreadable] = []
    cuts: list[TextCut] = []
    items: list[ChartItem] = []
    for i, raw in enumerate(resources):
        resource = _readable(raw, i, unreadable)
        if resource is None:
            continue
        where = f"{resource['resourceType']}/{resource.get('id')}"
        if _longest_text(resource) > text_limit:  # copied and cut only where one is long
            resource, count = cut_long_texts(resource, text_limit)
            cuts.append(TextCut(where, count, text_limit))
        items.append((None, resource, where))
    types = {item[2]: item[1]["resourceType"] for item in items}

    def left_out(key: str, problem: str) -> None:
        unreadable.append(Unreadable(key, types.get(key, key.split("/")[0]), problem))

    chart = Chart.from_items(items, on_unreadable=left_out)
    return ReadableChart(chart, unreadable, cuts, max(notice_limit, 1))


def _readable(raw: Any, index: int, found: list[Unreadable]) -> dict[str, Any] | None:
    """The resource as Handoff can read it, or None (left out); problems go to ``found``."""
    if not isinstance(raw, dict) or not isinstance(raw.get("resourceType"), str):
        found.append(Unreadable(f"Item {index + 1} of the chart", "", "it is not a FHIR resource"))
        return None
    rtype = raw["resourceType"]
    if rtype == "OperationOutcome":
        return raw  # a note about a search: the chart reads it (an error fails the read)
    rid = raw.get("id")
    if not isinstance(rid, str) or not FHIR_ID.match(rid):
        problem = "it has no id" if rid is None else "its id is not a FHIR id"
        found.append(Unreadable(f"A {rtype} (item {index + 1})", rtype, problem))
        return None
    where = f"{rtype}/{rid}"
    if rtype == "Bundle":
        found.append(Unreadable(where, rtype, "a Bundle inside a search result is not read"))
        return None
    if _too_deep(raw):
        found.append(Unreadable(where, rtype, f"it is nested deeper than {MAX_DEPTH} levels"))
        return None
    problems = element_problems(raw)
    if not problems:
        return raw
    if rtype not in CONTEXT_TYPES:
        found.append(Unreadable(where, rtype, problems[0][1]))
        return None
    kept = dict(raw)
    for element, problem in problems:
        kept.pop(element, None)
        consequence = CONSEQUENCES.get((rtype, element))
        problem = f"{problem} ({consequence})" if consequence else problem
        found.append(Unreadable(where, rtype, problem, left_out=False))
    return kept


#: What ignoring an element of the Patient or an Encounter means for the suggestions.
CONSEQUENCES = {
    ("Patient", "birthDate"): "the age is unknown: suggestions with an age limit are not made",
    ("Encounter", "period"): "the visit's start is unknown",
}


def _too_deep(value: Any) -> bool:
    """Nested deeper than MAX_DEPTH (checked without recursion, so any depth is safe)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _longest_text(value: Any) -> int:
    """The length of the longest string in a resource (keys aside), without recursion and
    without copying: most resources have no text to cut, and `cut_long_texts` copies."""
    longest = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            longest = max(longest, len(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return longest


# ---------------------------------------------------------------------------------------
# shapes of the elements Handoff reads (what the rules, evidence words and banner read)

Check = Callable[[Any], str | None]  # None when the value has the shape, else what it is not


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "is not a string"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "is not true or false"


def _integer(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    return None if ok else "is not an integer"


def _decimal(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else "is not a number"


def _date_time(value: Any) -> str | None:
    return None if parse_datetime(value) is not None else "is not a FHIR dateTime"


def _date(value: Any) -> str | None:
    return None if youngest_birth_date(value) is not None else "is not a FHIR date"


def _object(value: Any, parts: dict[str, Check], kind: str) -> str | None:
    """A JSON object whose listed parts, where present, have their shape."""
    if not isinstance(value, dict):
        return f"is not a {kind}"
    for name, check in parts.items():
        if name in value and (problem := check(value[name])) is not None:
            return f"is not a {kind} ({name} {problem})"
    return None


def _list_of(check: Check, kind: str) -> Check:
    def checked(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"is not a list of {kind}"
        for item in value:
            if check(item) is not None:
                return f"is not a list of {kind}"
        return None

    return checked


def _coding(value: Any) -> str | None:
    return _object(value, {"system": _string, "code": _string, "display": _string}, "Coding")


def _codeable_concept(value: Any) -> str | None:
    return _object(
        value, {"coding": _list_of(_coding, "Codings"), "text": _string}, "CodeableConcept"
    )


def _reference(value: Any) -> str | None:
    return _object(value, {"reference": _string, "display": _string}, "Reference")


def _period(value: Any) -> str | None:
    return _object(value, {"start": _date_time, "end": _date_time}, "Period")


def _quantity(value: Any) -> str | None:
    return _object(value, {"value": _decimal, "unit": _string}, "Quantity")


def _status(value: Any) -> str | None:
    """A code, or a CodeableConcept with a code (clinicalStatus): what status_code reads. A
    status that reads as none would count as absent, which rules may allow."""
    if isinstance(value, str):
        return None
    if _codeable_concept(value) is None and status_code(value) is not None:
        return None
    return "is not a code or a CodeableConcept with a code"


def _encounter_class(value: Any) -> str | None:
    """R4's Coding, or R5's list of CodeableConcepts (has_class reads both)."""
    if isinstance(value, list):
        return _list_of(_codeable_concept, "CodeableConcepts")(value)
    return None if _coding(value) is None else "is not a Coding"


def _human_name(value: Any) -> str | None:
    parts = {"text": _string, "family": _string, "given": _list_of(_string, "strings")}
    return _object(value, parts, "HumanName")


def _identifier(value: Any) -> str | None:
    parts: dict[str, Check] = {"system": _string, "value": _string, "type": _codeable_concept}
    return _object(value, parts, "Identifier")


def _extension(value: Any) -> str | None:
    parts: dict[str, Check] = {"url": _string, "valueString": _string, "valueCoding": _coding}
    parts["extension"] = _list_of(lambda v: _object(v, parts, "Extension"), "Extensions")
    return _object(value, parts, "Extension")


def _contained(value: Any) -> str | None:
    """Contained resources (a medication's Medication): objects with a readable code."""
    parts: dict[str, Check] = {"id": _string, "code": _codeable_concept}
    return _list_of(lambda v: _object(v, parts, "resource"), "resources")(value)


_REFERENCES: dict[str, Check] = {
    "subject": _reference,
    "patient": _reference,
    "encounter": _reference,
    "context": _reference,
}
_TIMES: dict[str, Check] = {
    "onsetDateTime": _date_time,
    "onsetPeriod": _period,
    "effectiveDateTime": _date_time,
    "effectiveInstant": _date_time,
    "effectivePeriod": _period,
    "authoredOn": _date_time,
    "whenHandedOver": _date_time,
    "whenPrepared": _date_time,
    "recordedDate": _date_time,
    "dateAsserted": _date_time,
    "issued": _date_time,
    "abatementDateTime": _date_time,
}
_CODED: dict[str, Check] = {
    "code": _codeable_concept,
    "status": _status,
    "clinicalStatus": _status,
    "verificationStatus": _status,
    **_REFERENCES,
    **_TIMES,
}
_MEDICATION: dict[str, Check] = {
    **_CODED,
    "medicationCodeableConcept": _codeable_concept,
    "medicationReference": _reference,
    "contained": _contained,
}
#: Per resource type, the elements Handoff reads and their shapes.
SHAPES: dict[str, dict[str, Check]] = {
    "Patient": {
        "name": _list_of(_human_name, "HumanNames"),
        "identifier": _list_of(_identifier, "Identifiers"),
        "birthDate": _date,
        "gender": _string,
        "deceasedBoolean": _boolean,
        "deceasedDateTime": _date_time,
        "extension": _list_of(_extension, "Extensions"),
    },
    "Encounter": {
        "status": _string,
        "class": _encounter_class,
        "period": _period,
        "type": _list_of(_codeable_concept, "CodeableConcepts"),
        **_REFERENCES,
    },
    "Observation": {
        **_CODED,
        "valueQuantity": _quantity,
        "valueInteger": _integer,
        "valueDecimal": _decimal,
        "valueBoolean": _boolean,
        "valueString": _string,
        "valueCodeableConcept": _codeable_concept,
        "interpretation": _list_of(_codeable_concept, "CodeableConcepts"),
    },
    **{rtype: _MEDICATION for rtype in MEDICATION_TYPES},
}


def element_problems(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(element, "element is not a ...") for each element read that has the wrong shape."""
    shapes = SHAPES.get(resource["resourceType"], _CODED)
    return [
        (name, f"{name} {problem}")
        for name, check in shapes.items()
        if name in resource and (problem := check(resource[name])) is not None
    ]


# ---------------------------------------------------------------------------------------
# long texts


def cut_text(text: str, limit: int) -> str:
    """The text, or its first ``limit`` characters and a marker with its length and hash."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{text[:limit]}… [cut: {len(text):,} characters in all; sha256 {digest}]"


def cut_long_texts(resource: dict[str, Any], limit: int) -> tuple[dict[str, Any], int]:
    """The resource with every string longer than ``limit`` cut (copied only where cut), and
    how many were cut. Matched strings (codes, references) are never that long in a readable
    resource: they are cut too, so they simply match nothing."""
    count = 0

    def walk(value: Any) -> Any:
        nonlocal count
        if isinstance(value, str):
            if len(value) > limit:
                count += 1
                return cut_text(value, limit)
            return value
        if isinstance(value, dict):
            out = {k: walk(v) for k, v in value.items()}
            return out if any(out[k] is not value[k] for k in value) else value
        if isinstance(value, list):
            items = [walk(v) for v in value]
            return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
        return value

    return walk(resource), count
