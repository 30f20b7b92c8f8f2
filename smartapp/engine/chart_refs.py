"""References and derived fields of a chart's resources: the resolver (``Type/id``, absolute
URLs, ``urn:uuid:`` fullUrls), a medication's codes, the encounter a resource belongs to."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .chart_types import MEDICATION_TYPES, UNMATCHED_ENCOUNTER, ChartError
from .fhir import coding_tuple, reference_string, type_id_of


class Resolver:
    """Resolves reference strings to canonical keys of the chart (memoised)."""

    def __init__(self, keys: Mapping[str, Any], aliases: Mapping[str, str]) -> None:
        self._keys = keys
        self._aliases = aliases
        self._canonical: dict[str, str | None] = {}
        self._targets: dict[str, str | None] = {}

    def resolve(self, reference: str) -> str | None:
        """Key of a chart resource, or None if the chart does not hold it."""
        if reference in self._aliases:
            return self._aliases[reference]
        if reference in self._keys:
            return reference
        tail = type_id_of(reference)
        return tail if tail in self._keys else None

    def canonical(self, reference: str) -> str | None:
        """Key of the resource named, even when the chart does not hold it."""
        try:
            return self._canonical[reference]
        except KeyError:
            found = self._canonical[reference] = self.resolve(reference) or type_id_of(reference)
            return found

    def target(self, value: Any) -> str | None:
        """Canonical key a Reference element names; None when it has no reference."""
        if not isinstance(value, dict):
            return None
        raw = value.get("reference")
        if not isinstance(raw, str):
            return None
        return self.named(raw)

    def named(self, raw: str) -> str | None:
        """Canonical key a reference string names (as :meth:`target` reads it)."""
        try:
            return self._targets[raw]
        except KeyError:
            ref = raw.strip()
            found = self._targets[raw] = self.canonical(ref) if ref else None
            return found

    def lookup(self, key: str) -> dict[str, Any]:
        """The resource for a resolved key."""
        value = self._keys[key]
        return value[0] if isinstance(value, tuple) else value.resource


def codes_of(
    resource: dict[str, Any], rtype: str, key: str, resolver: Resolver
) -> tuple[tuple[str, str], ...]:
    """(system, code) pairs of the resource's code, or of its medication's code."""
    if rtype in MEDICATION_TYPES:
        if "medicationCodeableConcept" in resource:
            return coding_tuple(resource["medicationCodeableConcept"])
        medication = medication_of(resource, key, resolver)
        return coding_tuple(medication.get("code"))
    return coding_tuple(resource.get("code"))


def medication_of(resource: dict[str, Any], key: str, resolver: Resolver) -> dict[str, Any]:
    """The Medication a medicationReference points to (contained or in the chart).

    An unresolvable medication would hide what the patient takes (say, methadone), so it
    is an error rather than a silently uncoded order.
    """
    ref = reference_string(resource.get("medicationReference"))
    if ref is None:
        raise ChartError(
            f"{key}: has neither medicationCodeableConcept nor medicationReference", "no-medication"
        )
    if ref.startswith("#"):
        for contained in resource.get("contained") or ():
            if isinstance(contained, dict) and contained.get("id") == ref[1:]:
                return contained
    else:
        target = resolver.resolve(ref)
        if target is not None and target.startswith("Medication/"):
            return resolver.lookup(target)
    raise ChartError(
        f"{key}: medicationReference {ref!r} is not in the chart", "medication-missing"
    )


MEDICATION_PROBLEM = {
    "no-medication": "it names no medication",
    "medication-missing": "the Medication it references is not in the chart",
}


def encounter_of(resource: dict[str, Any], target: Callable[[Any], str | None]) -> str | None:
    """Key of the Encounter a resource references (``encounter``, else ``context``).

    None when it references no encounter; UNMATCHED_ENCOUNTER when it references one the
    chart cannot name (so it never counts as "this visit" by time either). ``target`` is
    the chart's :meth:`Resolver.target`.
    """
    if "encounter" in resource:
        return target(resource["encounter"]) or UNMATCHED_ENCOUNTER
    context = resource.get("context")
    if not isinstance(context, dict):
        return None
    found = target(context)
    if found is not None:
        return found if found.startswith("Encounter/") else None
    return UNMATCHED_ENCOUNTER if context.get("type", "Encounter") == "Encounter" else None
