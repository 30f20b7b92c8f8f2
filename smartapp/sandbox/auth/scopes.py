"""SMART scopes: parsing (v1 and v2), granting, and the access policy of a token.

v1: `patient/Condition.read`, `user/*.write`, `patient/*.*`.
v2: `patient/Condition.rs`, `patient/ServiceRequest.c`, `user/*.cruds`, optionally with a
query suffix (`patient/Observation.rs?category=laboratory`) that narrows the grant; the
suffix is honoured for the search parameters the server supports (a scope whose query the
server cannot parse is not granted).

`patient/` grants confine reads to the launch patient's compartment (shared directory types
such as Practitioner and Organization stay readable) and writes to resources whose
subject/patient/for is that patient. `user/` grants allow what the user may see; the demo
physician sees every chart, as an ED physician does. `system/` grants (SMART Backend
Services, no user and no patient) allow what they name on every record, like `user/` grants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, and_, or_

from smartapp.sandbox.db import resources
from smartapp.sandbox.fhir.access import CREATE, DELETE, READ, SEARCH, UPDATE
from smartapp.sandbox.fhir.errors import FhirError
from smartapp.sandbox.fhir.resource_types import PATIENT_COMPARTMENT_TYPES, R4_RESOURCE_TYPES
from smartapp.sandbox.fhir.search import Criterion, criteria_sql, matches, never, parse_search

#: Non-resource scopes the server grants.
CONTEXT_SCOPES = (
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
)

_SCOPE_RE = re.compile(
    r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|[cruds]+)(?:\?(.+))?$"
)
_PERMS = {"read": "rs", "write": "cud", "*": "cruds"}
_INTERACTION_PERM = {READ: "r", SEARCH: "s", CREATE: "c", UPDATE: "u", DELETE: "d"}


@dataclass(frozen=True)
class ClinicalScope:
    """One parsed clinical scope."""

    context: str
    rtype: str
    perms: str
    query: tuple[tuple[str, str], ...]
    raw: str

    def covers(self, interaction: str, rtype: str) -> bool:
        """Does this scope allow `interaction` on `rtype` (ignoring compartment and query)?"""
        return self.rtype in ("*", rtype) and _INTERACTION_PERM[interaction] in self.perms


def parse_scope(scope: str) -> ClinicalScope | None:
    """A ClinicalScope, or None when `scope` is not a well-formed clinical scope."""
    match = _SCOPE_RE.match(scope)
    if not match:
        return None
    context, rtype, perms, query = match.groups()
    if rtype != "*" and rtype not in R4_RESOURCE_TYPES:
        return None
    if perms in _PERMS:
        if query:  # v1 scopes carry no query
            return None
        perms = _PERMS[perms]
    elif "".join(sorted(set(perms), key="cruds".index)) != perms:
        return None  # v2 letters must be unique and in c-r-u-d-s order
    pairs = tuple(parse_qsl(query, keep_blank_values=True)) if query else ()
    if pairs:
        if rtype == "*":
            return None
        try:
            parse_search(rtype, pairs, "", strict=True)
        except FhirError:
            return None
    return ClinicalScope(context, rtype, perms, pairs, scope)


def is_supported(scope: str) -> bool:
    """Can a launch (authorization code, refresh) be granted `scope`? system/ scopes are for
    the backend services grant only (auth/backend.py), within what the client registered."""
    if scope in CONTEXT_SCOPES:
        return True
    parsed = parse_scope(scope)
    return parsed is not None and parsed.context in ("patient", "user")


def system_scope_covered(requested: str, registered: list[str]) -> bool:
    """Is `requested` a system/ scope within one of the `registered` system/ scopes (same or
    wildcard type, a subset of its permissions, and its query if it has one)?"""
    wanted = parse_scope(requested)
    if wanted is None or wanted.context != "system":
        return False
    for scope in registered:
        allowed = parse_scope(scope)
        if allowed is None or allowed.context != "system":
            continue
        if allowed.rtype not in ("*", wanted.rtype) or not set(wanted.perms) <= set(allowed.perms):
            continue
        if allowed.query and allowed.query != wanted.query:
            continue
        return True
    return False


def granted_scopes(requested: str) -> str:
    """Requested ∩ supported, order kept, duplicates dropped."""
    seen: dict[str, None] = {}
    for scope in requested.split():
        if is_supported(scope):
            seen.setdefault(scope, None)
    return " ".join(seen)


def is_launch_scope(scope: str) -> bool:
    """`launch`, `launch/patient`, `launch/encounter`...: asks for SMART launch context."""
    return scope == "launch" or scope.startswith("launch/")


def is_resource_scope(scope: str) -> bool:
    """A FHIR resource scope (`patient/...`, `user/...`, `system/...`), granted or not."""
    return scope.startswith(("patient/", "user/", "system/"))


def is_sign_in_only(scope: str) -> bool:
    """No launch and no FHIR resource scope in `scope` (e.g. `openid profile fhirUser`)."""
    return not any(is_launch_scope(s) or is_resource_scope(s) for s in scope.split())


def is_plain_openid(scope: str) -> bool:
    """A plain OpenID Connect sign-in: `openid` and nothing SMART (no launch, no FHIR
    resource scope): no `aud` needed, no patient picker, no launch context."""
    return "openid" in scope.split() and is_sign_in_only(scope)


def is_v2_clinical(scope: str) -> bool:
    """Is `scope` a clinical scope in the v2 letter form (`.rs`, `.c`, `.cruds`...)?"""
    match = _SCOPE_RE.match(scope)
    return match is not None and match.group(3) not in _PERMS


def read_part(scope: str) -> str | None:
    """`scope` without create/update/delete: `.cruds` -> `.rs`, `.*` -> `.read`; None when
    nothing readable is left (`.write`, `.c`, `.cud`). Non-clinical scopes are unchanged."""
    match = _SCOPE_RE.match(scope)
    if match is None:
        return scope
    context, rtype, perms, query = match.groups()
    if perms == "read":
        return scope
    if perms == "write":
        return None
    if perms == "*":
        return f"{context}/{rtype}.read"
    kept = "".join(letter for letter in perms if letter in "rs")
    if not kept:
        return None
    return f"{context}/{rtype}.{kept}" + (f"?{query}" if query else "")


class ScopeAccess:
    """The `Access` policy of one access token."""

    def __init__(self, scope: str, patient: str | None, user: str | None, fhir_base: str) -> None:
        self.scope = scope
        self.patient = patient
        self.user = user
        self.fhir_base = fhir_base
        self.grants = [g for g in map(parse_scope, scope.split()) if g is not None]

    def _grants(self, interaction: str, rtype: str) -> list[ClinicalScope]:
        return [g for g in self.grants if g.covers(interaction, rtype)]

    def _criteria(self, grant: ClinicalScope, rtype: str) -> list[Criterion]:
        return parse_search(rtype, grant.query, self.fhir_base).criteria

    def _in_compartment(self, grant: ClinicalScope, rtype: str, patients: list[str | None]) -> bool:
        if grant.context != "patient":
            return True
        if rtype not in PATIENT_COMPARTMENT_TYPES:
            return False
        return (
            bool(patients) and self.patient is not None and all(p == self.patient for p in patients)
        )

    def require(self, interaction: str, rtype: str) -> None:
        """403 when no granted scope covers the interaction on this type."""
        if not self._grants(interaction, rtype):
            raise FhirError(
                403,
                f"The granted scopes do not allow {interaction} on {rtype} "
                f"(granted: {self.scope or 'none'})",
                "forbidden",
            )

    def search_filter(self, rtype: str) -> ColumnElement[bool] | None:
        """OR of the grants' limits; None when one grant is unlimited."""
        alternatives: list[ColumnElement[bool]] = []
        for grant in self._grants(SEARCH, rtype):
            limits: list[ColumnElement[bool]] = []
            if grant.context == "patient" and rtype in PATIENT_COMPARTMENT_TYPES:
                if self.patient is None:
                    continue
                if rtype == "Patient":
                    limits.append(resources.c.id == self.patient)
                else:
                    limits.append(resources.c.patient_id == self.patient)
            if grant.query:
                limits.extend(criteria_sql(rtype, self._criteria(grant, rtype)))
            if not limits:
                return None
            alternatives.append(and_(*limits))
        return or_(*alternatives) if alternatives else never()

    def can_read(self, rtype: str, resource: dict, patient_id: str | None) -> bool:
        """Read allowed when a read grant's compartment and query both hold."""
        for grant in self._grants(READ, rtype):
            if (
                grant.context == "patient"
                and rtype in PATIENT_COMPARTMENT_TYPES
                and (self.patient is None or patient_id != self.patient)
            ):
                continue
            if grant.query and not matches(
                rtype, resource, self._criteria(grant, rtype), self.fhir_base
            ):
                continue
            return True
        return False

    def check_write(
        self, interaction: str, rtype: str, resource: dict, patients: list[str | None]
    ) -> None:
        """403 unless a write grant covers the type, the compartment and its query."""
        self.require(interaction, rtype)
        for grant in self._grants(interaction, rtype):
            if not self._in_compartment(grant, rtype, patients):
                continue
            if grant.query and not matches(
                rtype, resource, self._criteria(grant, rtype), self.fhir_base
            ):
                continue
            return
        where = ", ".join(p or "no patient" for p in patients) or "no patient"
        raise FhirError(
            403,
            f"{interaction} of this {rtype} is outside the granted scopes: it belongs to "
            f"{where}, the launch patient is {self.patient or 'none'}",
            "forbidden",
        )
