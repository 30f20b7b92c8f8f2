"""Test controls' state: fault switches that make the EHR misbehave, a log of received requests.

The HTTP side is controls.py, only served when the app is built with `test_controls=True`
(a demo never exposes them):

- `GET /_sandbox/faults` -> the current faults (a JSON object; `{}` when none);
  `POST /_sandbox/faults` with a JSON object replaces the whole set (`{}` clears) and answers
  the new set; unknown names or wrong value types -> 400 `{"error", "error_description"}`.
- `POST /_sandbox/expire-tokens` -> `{"expired": n}`: every live access token is expired now
  (refresh tokens stay usable).
- `GET /_sandbox/requests` -> a JSON array: the last 200 requests the sandbox received,
  oldest first, each `{"method", "path", "time", "auth_scheme", "status"}` (path
  without query string; `auth_scheme` is the Authorization scheme only, never a credential);
  requests to /_sandbox/ itself are not logged. `DELETE` clears it (204).

The state lives in memory on the app (`Sandbox.faults`, `Sandbox.requests`), behind locks.

Write behaviour: `write_behaviour` ("fhir-rest", "epic", "oracle-health"; see
fhir/write_rules.py) makes the FHIR API refuse writes like that EHR; unset, the app's own
default (`create_sandbox_app(write_behaviour=...)`) applies. The individual write switches
(`refuse_transactions`, `no_conditional_create`, `refuse_create`, `require_*`) add their
restriction on top of whichever behaviour is in force; they never relax one.

Chart reads: searches inside a batch (how Handoff reads a chart) can withhold consent-
restricted records with an OperationOutcome saying so (`withhold_restricted`), answer in
small pages (`page_size`) and give next links that have expired (`expire_next_pages`: the
next page answers 410 Gone). See fhir/bundles.py.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

from smartapp.sandbox.auth.scopes import is_v2_clinical, read_part
from smartapp.sandbox.fhir.resource_types import NON_STORABLE_TYPES, R4_RESOURCE_TYPES
from smartapp.sandbox.fhir.write_rules import BEHAVIOURS, WriteRules, rules_for

REQUEST_LOG_SIZE = 200

#: Fault name -> (kind, what it does). Kinds: "flag" (true/false), "scopes" (list of
#: strings), "seconds" and "count" (positive integers), "behaviour" (one of BEHAVIOURS),
#: "types" (list of R4 resource type names).
FAULTS: dict[str, tuple[str, str]] = {
    "deny_consent": ("flag", "authorize redirects back with error=access_denied"),
    "narrow_scopes": ("scopes", "these scopes are dropped from every grant"),
    "drop_write_scopes": ("flag", "c/u/d dropped from every grant (.cruds -> .rs, .* -> .read)"),
    "id_token_bad_signature": ("flag", "id_token signed by a key not in the JWKS (same kid)"),
    "id_token_wrong_aud": ("flag", "id_token aud is another client"),
    "id_token_wrong_iss": ("flag", "id_token iss is another server"),
    "id_token_expired": ("flag", "id_token exp is in the past"),
    "id_token_wrong_nonce": ("flag", "id_token nonce is not the one sent"),
    "access_token_lifetime": ("seconds", "expires_in of newly issued access tokens"),
    "refuse_refresh": ("flag", "the refresh grant answers invalid_grant"),
    "omit_patient": ("flag", "token responses carry no patient"),
    "smart_config_unavailable": ("flag", "/.well-known/smart-configuration answers 404"),
    "advertise_v1_only": ("flag", "discovery omits permission-v2; v2 scopes are not granted"),
    # -- writes: behave like a given EHR (fhir/write_rules.py) ---------------------------
    "write_behaviour": ("behaviour", "writes refused or constrained like that EHR"),
    "refuse_transactions": ("flag", "transaction Bundles answer 405 (batch still works)"),
    "no_conditional_create": ("flag", "If-None-Exist is ignored: a second POST duplicates"),
    "refuse_create": ("types", "creating these resource types answers 405"),
    "require_period_end": ("flag", "DocumentReference needs context.period.end (else 422)"),
    "require_final": ("flag", "DocumentReference needs docStatus final (else 422)"),
    "require_plain_text": ("flag", "DocumentReference content must be text/plain (else 422)"),
    "require_encounter": ("flag", "DocumentReference needs an existing context.encounter"),
    # -- searches inside a batch (how Handoff reads a chart; see fhir/bundles.py) --------
    "withhold_restricted": (
        "flag",
        "records with a restricted security label (RESTRICTED_LABELS) are left out, with an "
        "OperationOutcome entry (search.mode outcome, issue code suppressed) saying so",
    ),
    "page_size": ("count", "at most this many matches a page; the next link pages on"),
    "expire_next_pages": ("flag", "next links lead to an expired page (410 Gone)"),
}

#: Security labels (meta.security) of records an EHR withholds without the patient's consent
#: (withhold_restricted): 42 CFR Part 2 (US substance use disorder treatment records), the
#: substance abuse information sensitivity and the Restricted confidentiality code. Sandbox
#: data, not a rule of Handoff's: Handoff reads only the EHR's OperationOutcome.
RESTRICTED_LABELS = frozenset(
    {
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "42CFRPart2"),
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "ETH"),
        ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R"),
    }
)

#: The write switches, each a keyword of WriteRules.with_switches.
_WRITE_SWITCHES = (
    "refuse_transactions",
    "no_conditional_create",
    "refuse_create",
    "require_period_end",
    "require_final",
    "require_plain_text",
    "require_encounter",
)

_KNOWN_SCHEMES = {s.lower(): s for s in ("Basic", "Bearer", "DPoP", "Digest", "Negotiate")}
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,19}$")


class FaultError(ValueError):
    """A fault set that cannot be applied."""


def validate_faults(value: object) -> dict[str, Any]:
    """The fault set `value` checked against FAULTS (FaultError when it is not valid)."""
    if not isinstance(value, dict):
        raise FaultError("the body must be a JSON object of fault switches ({} clears them)")
    checked: dict[str, Any] = {}
    for name, setting in value.items():
        if name not in FAULTS:
            raise FaultError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        kind = FAULTS[name][0]
        if kind == "flag" and not isinstance(setting, bool):
            raise FaultError(f"{name} must be true or false")
        if kind == "scopes" and not (
            isinstance(setting, list) and all(isinstance(s, str) for s in setting)
        ):
            raise FaultError(f"{name} must be a list of scope strings")
        if kind in ("seconds", "count") and (
            isinstance(setting, bool) or not isinstance(setting, int) or setting < 1
        ):
            unit = " of seconds" if kind == "seconds" else ""
            raise FaultError(f"{name} must be a positive whole number{unit}")
        if kind == "behaviour" and setting not in BEHAVIOURS:
            raise FaultError(f"{name} must be one of {', '.join(BEHAVIOURS)}")
        if kind == "types" and not (
            isinstance(setting, list)
            and all(
                isinstance(t, str) and t in R4_RESOURCE_TYPES and t not in NON_STORABLE_TYPES
                for t in setting
            )
        ):
            raise FaultError(f"{name} must be a list of FHIR R4 resource type names")
        checked[name] = list(setting) if kind in ("scopes", "types") else setting
    return checked


class Faults:
    """The current fault switches of one sandbox (thread-safe; empty = a well-behaved EHR)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, Any] = {}

    def replace(self, value: object) -> dict[str, Any]:
        """Validate and install a new set (replacing the old one); the new set."""
        checked = validate_faults(value)
        with self._lock:
            self._current = checked
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """A copy of the current set."""
        with self._lock:
            return {k: list(v) if isinstance(v, list) else v for k, v in self._current.items()}

    def get(self, name: str) -> Any:
        """The setting of one fault (None when off)."""
        with self._lock:
            return self._current.get(name)

    def on(self, name: str) -> bool:
        """Is this fault switched on?"""
        return bool(self.get(name))

    def write_rules(self, default: str = "fhir-rest") -> WriteRules:
        """The write rules in force: `write_behaviour` (else `default`) plus the switches."""
        faults = self.snapshot()
        rules = rules_for(faults.get("write_behaviour") or default)
        switches = {name: faults[name] for name in _WRITE_SWITCHES if faults.get(name)}
        if "refuse_create" in switches:
            switches["refuse_create"] = frozenset(switches["refuse_create"])
        return rules.with_switches(**switches) if switches else rules

    def narrow_grant(self, scope: str) -> str:
        """The scope really granted under narrow_scopes, drop_write_scopes, advertise_v1_only."""
        faults = self.snapshot()
        narrowed = set(faults.get("narrow_scopes") or [])
        kept: dict[str, None] = {}
        for item in scope.split():
            if item in narrowed:
                continue
            if faults.get("advertise_v1_only") and is_v2_clinical(item):
                continue  # a v1-only server does not understand v2 scopes
            reduced = read_part(item) if faults.get("drop_write_scopes") else item
            if reduced and reduced not in narrowed:
                kept.setdefault(reduced, None)
        return " ".join(kept)


def current_faults() -> Faults | None:
    """The faults of the sandbox serving the current request (None outside one, or in an
    app that is not a sandbox): what the FHIR layer asks without being handed them."""
    from flask import current_app, has_app_context

    if not has_app_context():
        return None
    sandbox = current_app.extensions.get("sandbox")
    faults = getattr(sandbox, "faults", None)
    return faults if isinstance(faults, Faults) else None


def auth_scheme(header: str | None) -> str | None:
    """The scheme of an Authorization header, never its credential.

    A header that is not `<known scheme> <credentials>` is reported as "other", so a bare
    token sent without a scheme is never logged.
    """
    if not header:
        return None
    scheme = header.strip().split(None, 1)[0] if header.strip() else ""
    if _SCHEME_RE.match(scheme) and scheme.lower() in _KNOWN_SCHEMES:
        return _KNOWN_SCHEMES[scheme.lower()]
    return "other"


class RequestLog:
    """The last REQUEST_LOG_SIZE requests: method, path, time, auth scheme, status."""

    def __init__(self, size: int = REQUEST_LOG_SIZE) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)

    def record(self, method: str, path: str, authorization: str | None) -> dict[str, Any]:
        """Log a request as it arrives; the entry (to finish with its status)."""
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "auth_scheme": auth_scheme(authorization),
            "status": None,
        }
        with self._lock:
            self._entries.append(entry)
        return entry

    def finish(self, entry: dict[str, Any], status: int) -> None:
        """Set the response status of a logged request."""
        with self._lock:
            entry["status"] = status

    def entries(self) -> list[dict[str, Any]]:
        """Copies of the entries, oldest first."""
        with self._lock:
            return [dict(entry) for entry in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
