"""The FHIR R4 client over HTTP: the transport (every failure a FhirError saying whether a
write may have landed), searches, and the writes (create, update, transaction). Reading a
whole chart is smartapp.fhir.chart; `FhirClient.read_chart` is its shortcut."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson
import requests

from smartapp.fhir.chart import (
    CHART_TYPES,
    ChartLimits,
    ChartRead,
    bundle_outcomes,
    read_chart,
    withheld_reasons,
)
from smartapp.fhir.errors import FhirError, parse_response
from smartapp.fhir.http import send

# Names importers of this module use, kept at their old path since the chart read moved.
__all__ = [
    "CHART_TYPES",
    "FHIR_JSON",
    "ChartLimits",
    "ChartRead",
    "FhirClient",
    "FhirError",
    "IncompleteSearch",
]

FHIR_JSON = "application/fhir+json"


class IncompleteSearch(FhirError):
    """A search whose answer could not be read in full; `resources`: what was read."""

    def __init__(self, message: str, resources: list[dict], status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.resources = resources


@dataclass
class FhirClient:
    """A FHIR server base URL and a bearer token; every call has a timeout and goes over the
    EHR's shared keep-alive connections (smartapp.fhir.http)."""

    base: str
    access_token: str = field(repr=False)  # never in a repr, a log line or a traceback
    timeout: tuple[float, float] = (5.0, 20.0)

    def headers(self) -> dict[str, str]:
        """The request headers: the bearer token and FHIR JSON both ways."""
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
        headers = self.headers() | (extra_headers or {})
        data = orjson.dumps(body) if body is not None else None
        try:
            return send(method, url, headers=headers, data=data, timeout=self.timeout)
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
        return parse_response(self._send(method, url, body, extra_headers))

    def create(self, resource: dict, if_none_exist: str | None = None) -> dict:
        """POST one resource (conditionally where asked); returns {"id", "status"}."""
        url = f"{self.base}/{resource['resourceType']}"
        extra = {"If-None-Exist": if_none_exist} if if_none_exist else None
        response = self._send("POST", url, resource, extra)
        body = parse_response(response) if response.content else {}
        if response.status_code >= 300 and not body:
            parse_response(response)  # raises with the status
        res_id = body.get("id") or _id_from_location(
            response.headers.get("Location", ""), resource["resourceType"]
        )
        if not res_id:  # a success that does not say what it created: read it back
            raise FhirError(
                f"The EHR answered HTTP {response.status_code} without saying which "
                f"{resource['resourceType']} it created; Handoff checks the chart for it.",
                status=response.status_code,
                transient=True,
                unknown_outcome=True,
            )
        return {"id": res_id, "status": str(response.status_code)}

    def update(self, resource: dict) -> dict:
        """PUT a resource at its id (idempotent: a retry changes nothing more)."""
        body = self.put(resource)
        return {"id": body.get("id", resource["id"]), "status": "200"}

    def put(self, resource: dict, if_match: str | None = None) -> dict:
        """PUT a resource at its id, only over the version `if_match` (an ETag such as
        `W/"3"`; the EHR answers 412 when the resource changed meanwhile); returns the EHR's
        answer (the resource as stored, where it sends one)."""
        url = f"{self.base}/{resource['resourceType']}/{resource['id']}"
        return self._request("PUT", url, resource, {"If-Match": if_match} if if_match else None)

    def find(self, resource_type: str, query: str) -> list[dict]:
        """Resources of a type matching a search query (no paging: identifiers are unique)."""
        return _entries(self.get(f"{resource_type}?{query}"))

    def get(self, path_or_url: str) -> dict:
        """GET a path under the base, or an absolute URL (a next page)."""
        url = path_or_url if path_or_url.startswith("http") else f"{self.base}/{path_or_url}"
        return self._request("GET", url)

    def post_bundle(self, bundle: dict) -> dict:
        """POST a batch or transaction Bundle to the base; returns the response Bundle."""
        return self._request("POST", self.base, bundle)

    def search_all(self, path: str, max_pages: int = 50) -> list[dict]:
        """A search and every `next` page after it; returns the matching resources.

        Never part of an answer taken for all of it: IncompleteSearch (a FhirError, with
        what was read) when a `next` link remains after `max_pages` pages, a next page
        fails, or the EHR says it left records out (an OperationOutcome, see
        smartapp.fhir.chart.withheld_reasons)."""
        resources: list[dict] = []
        bundle = self.get(path)
        for page in range(1, max_pages + 1):
            resources.extend(_entries(bundle))
            reasons = [r for o in bundle_outcomes(bundle) for r in withheld_reasons(o)]
            if reasons:
                raise IncompleteSearch(f"The EHR left records out: {'; '.join(reasons)}", resources)
            next_url = _next_link(bundle)
            if not next_url:
                return resources
            if page == max_pages:
                break
            try:
                bundle = self.get(next_url)
            except FhirError as exc:
                raise IncompleteSearch(
                    f"A next page could not be read: {exc}", resources, exc.status
                ) from exc
        raise IncompleteSearch(f"More than {max_pages} pages: not all were read.", resources)

    def read_chart(
        self,
        patient_id: str,
        encounter_id: str | None,
        now: datetime,
        observation_days: int,
        types: tuple[str, ...] = ("Patient", "Observation", *CHART_TYPES),
        limits: ChartLimits | None = None,
    ) -> ChartRead:
        """Everything the rules need about one patient, in one batch request when possible.
        `types` limits the read to what the granted scopes allow; `limits` bounds the bytes
        and resources read. Parts of the EHR's answers that cannot be read, and parts cut by
        the limits, are left out and named in the result's notices: never an exception."""
        return read_chart(self, patient_id, encounter_id, now, observation_days, types, limits)


def _entries(bundle: dict) -> list[dict]:
    """The matching resources of a searchset (OperationOutcome entries left out)."""
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if "resource" in e and e.get("search", {}).get("mode", "match") != "outcome"
    ]


def _next_link(bundle: dict) -> str | None:
    """The URL of the searchset's next page, if any."""
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
