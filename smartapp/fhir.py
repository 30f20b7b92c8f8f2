"""FHIR R4 access over HTTP: read a patient's chart (one batch where the server allows it)
and post a transaction. Errors become FhirError with the server's own message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import orjson
import requests

FHIR_JSON = "application/fhir+json"

# Resource types the rules read, and how each is searched for one patient.
CHART_TYPES = (
    "Encounter",
    "Condition",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationAdministration",
    "MedicationDispense",
    "AllergyIntolerance",
    "ServiceRequest",
)


class FhirError(Exception):
    """A FHIR request failed. `transient` says whether retrying later may succeed.

    `unknown_outcome`: the request reached the EHR and a write may have been committed (the
    answer was cut, unreadable, or did not come in time): read back before writing again.
    `in_flight`: no answer came in time, so the EHR may still be working on it and commit later.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
        unknown_outcome: bool = False,
        in_flight: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after
        self.unknown_outcome = unknown_outcome
        self.in_flight = in_flight


@dataclass
class FhirClient:
    """A FHIR server base URL and a bearer token; every call has a timeout."""

    base: str
    access_token: str
    timeout: tuple[float, float] = (5.0, 20.0)

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.access_token}",
            "Accept": FHIR_JSON,
            "Content-Type": FHIR_JSON,
        }

    def _send(
        self, method: str, url: str, body: dict | None = None, extra_headers: dict | None = None
    ) -> requests.Response:
        """One HTTP exchange; every transport failure becomes a transient FhirError (never an
        uncaught requests exception), saying whether a write may have landed meanwhile."""
        headers = self._headers() | (extra_headers or {})
        data = orjson.dumps(body) if body is not None else None
        try:
            return requests.request(method, url, data=data, headers=headers, timeout=self.timeout)
        except requests.ConnectTimeout as exc:  # before "connected": nothing was sent
            raise FhirError("The EHR could not be reached.", transient=True) from exc
        except requests.Timeout as exc:
            raise FhirError(
                "The EHR did not answer in time.",
                transient=True,
                unknown_outcome=True,
                in_flight=True,
            ) from exc
        except requests.ConnectionError as exc:
            raise FhirError(
                "The EHR could not be reached.", transient=True, unknown_outcome=True
            ) from exc
        except requests.RequestException as exc:  # e.g. ChunkedEncodingError: a cut answer
            raise FhirError(
                "The connection to the EHR broke off before its answer was complete.",
                transient=True,
                unknown_outcome=True,
            ) from exc

    def _request(
        self, method: str, url: str, body: dict | None = None, extra_headers: dict | None = None
    ) -> dict:
        return _parse_response(self._send(method, url, body, extra_headers))

    def create(self, resource: dict, if_none_exist: str | None = None) -> dict:
        """POST one resource (conditionally where asked); returns {"id", "status"}."""
        url = f"{self.base}/{resource['resourceType']}"
        extra = {"If-None-Exist": if_none_exist} if if_none_exist else None
        response = self._send("POST", url, resource, extra)
        body = _parse_response(response) if response.content else {}
        if response.status_code >= 300 and not body:
            _parse_response(response)  # raises with the status
        res_id = body.get("id") or _id_from_location(
            response.headers.get("Location", ""), resource["resourceType"]
        )
        return {"id": res_id, "status": str(response.status_code)}

    def update(self, resource: dict) -> dict:
        """PUT a resource at its id (idempotent: a retry changes nothing more)."""
        url = f"{self.base}/{resource['resourceType']}/{resource['id']}"
        body = self._request("PUT", url, resource)
        return {"id": body.get("id", resource["id"]), "status": "200"}

    def find(self, resource_type: str, query: str) -> list[dict]:
        """Resources of a type matching a search query (no paging: identifiers are unique)."""
        return _entries(self.get(f"{resource_type}?{query}"))

    def get(self, path_or_url: str) -> dict:
        url = path_or_url if path_or_url.startswith("http") else f"{self.base}/{path_or_url}"
        return self._request("GET", url)

    def post_bundle(self, bundle: dict) -> dict:
        return self._request("POST", self.base, bundle)

    def search_all(self, path: str, max_pages: int = 50) -> list[dict]:
        """A search and every `next` page after it; returns the matching resources."""
        resources: list[dict] = []
        bundle = self.get(path)
        for _ in range(max_pages):
            resources.extend(_entries(bundle))
            next_url = _next_link(bundle)
            if not next_url:
                break
            bundle = self.get(next_url)
        return resources

    def read_chart(
        self,
        patient_id: str,
        encounter_id: str | None,
        now: datetime,
        observation_days: int,
        types: tuple[str, ...] = ("Patient", "Observation", *CHART_TYPES),
    ) -> list[dict]:
        """Everything the rules need about one patient, in one batch request when possible.
        `types` limits the read to what the granted scopes allow."""
        since = (now - timedelta(days=observation_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        searches = [f"Patient/{patient_id}"] if "Patient" in types else []
        searches += [
            f"{t}?{urlencode({'patient': patient_id, '_count': 500})}"
            for t in CHART_TYPES
            if t in types
        ]
        if "Observation" in types:
            recent = {"patient": patient_id, "date": f"ge{since}", "_count": 500}
            searches.append(f"Observation?{urlencode(recent)}")
            if encounter_id:
                by_visit = {"encounter": f"Encounter/{encounter_id}", "_count": 500}
                searches.append(f"Observation?{urlencode(by_visit)}")
        batch = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": url}} for url in searches],
        }
        try:
            response = self.post_bundle(batch)
        except FhirError as exc:
            if exc.status in (400, 404, 405, 422, 501):  # no batch support: one search at a time
                return self._with_medications(_dedupe(self._read_one_by_one(searches)))
            raise
        resources = self._batch_results(searches, response)
        return self._with_medications(_dedupe(resources))

    def _batch_results(self, searches: list[str], response: dict) -> list[dict]:
        """The resources of a batch-response, following each search's next pages."""
        resources: list[dict] = []
        for url, entry in zip(searches, response.get("entry", []), strict=False):
            status = str(entry.get("response", {}).get("status", ""))
            if not status.startswith("2"):
                raise FhirError(
                    f"The EHR refused to read {url.split('?')[0]} (HTTP {status}).",
                    status=int(status[:3]) if status[:3].isdigit() else None,
                )
            resource = entry.get("resource") or {}
            if resource.get("resourceType") == "Bundle":
                resources.extend(_entries(resource))
                next_url = _next_link(resource)
                if next_url:
                    resources.extend(self.search_all(next_url))
            elif resource:
                resources.append(resource)
        return resources

    def _with_medications(self, resources: list[dict]) -> list[dict]:
        """Fetch Medications that orders reference but do not contain (Epic references them):
        without them a methadone order would be invisible to the rules."""
        have = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources}
        missing = sorted(
            {
                ref
                for r in resources
                if (ref := (r.get("medicationReference") or {}).get("reference", ""))
                and not ref.startswith("#")
                and _relative(ref) not in have
            }
        )
        if not missing:
            return resources
        reads = [_relative(ref) for ref in missing]
        batch = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": url}} for url in reads],
        }
        try:
            return resources + self._batch_results(reads, self.post_bundle(batch))
        except FhirError as exc:
            if exc.status in (400, 404, 405, 422, 501):
                return resources + self._read_one_by_one(reads)
            raise

    def _read_one_by_one(self, searches: list[str]) -> list[dict]:
        resources: list[dict] = []
        for url in searches:
            if "?" in url:
                resources.extend(self.search_all(url))
            else:
                resources.append(self.get(url))
        return resources


def _parse_response(response: requests.Response) -> dict:
    try:
        body = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        body = None
    if response.status_code < 300 and isinstance(body, dict):
        return body
    if response.status_code < 300:
        # A success whose body cannot be read: the EHR may well have done it. Not a refusal:
        # an unknown outcome, to confirm by reading back.
        raise FhirError(
            f"The EHR answered HTTP {response.status_code} with something that is not FHIR "
            "JSON; Handoff checks the chart for what landed.",
            status=response.status_code,
            transient=True,
            unknown_outcome=True,
        )
    message = _outcome_text(body) or response.reason or "error"
    transient = response.status_code in (408, 429) or response.status_code >= 500
    retry_after = None
    if response.headers.get("Retry-After", "").isdigit():
        retry_after = float(response.headers["Retry-After"])
    raise FhirError(
        f"The EHR answered HTTP {response.status_code}: {message}",
        status=response.status_code,
        transient=transient,
        retry_after=retry_after,
    )


def _outcome_text(body) -> str | None:
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    texts = []
    for issue in body.get("issue", []):
        text = (
            issue.get("diagnostics")
            or issue.get("details", {}).get("text")
            or issue.get("code", "")
        )
        where = ", ".join(issue.get("expression", []))
        texts.append(f"{text} ({where})" if where else text)
    return "; ".join(t for t in texts if t) or None


def _entries(bundle: dict) -> list[dict]:
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if "resource" in e and e.get("search", {}).get("mode", "match") != "outcome"
    ]


def _next_link(bundle: dict) -> str | None:
    for link in bundle.get("link", []):
        if link.get("relation") == "next":
            return link.get("url")
    return None


def _id_from_location(location: str, resource_type: str) -> str | None:
    """`.../Type/id/_history/1` -> id."""
    parts = location.split("/_history/")[0].rstrip("/").split("/")
    if resource_type in parts:
        index = parts.index(resource_type)
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


def _relative(reference: str) -> str:
    """`Type/id` from a relative or absolute reference."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def _dedupe(resources: list[dict]) -> list[dict]:
    seen: dict[tuple[str, str], dict] = {}
    for resource in resources:
        key = (resource.get("resourceType", ""), resource.get("id", ""))
        seen.setdefault(key, resource)
    return list(seen.values())
