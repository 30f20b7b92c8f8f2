"""Reading a patient's chart from the EHR: one batch where the server allows it, each
search's next pages, and the Medications orders reference. Bounded (bytes and resources) and
tolerant: a part of an answer that is not what FHIR says it is is noted and left out, never an
exception."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
import requests

from smartapp.fhir.errors import FhirError, parse_response
from smartapp.fhir.http import send

if TYPE_CHECKING:  # the client only types the reader; it imports this module at run time
    from smartapp.fhir.client import FhirClient

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


@dataclass(frozen=True)
class ChartLimits:
    """How much of one chart Handoff reads (settings CHART_MAX_BYTES, CHART_MAX_RESOURCES)."""

    max_bytes: int = 32 * 1024 * 1024
    max_resources: int = 20_000

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ChartLimits:
        """The limits from an app's configuration (a mapping of settings)."""
        return cls(int(config["CHART_MAX_BYTES"]), int(config["CHART_MAX_RESOURCES"]))


@dataclass
class ChartRead:
    """A chart as read: the resources (JSON objects with a resourceType, otherwise as the EHR
    sent them), a notice for each part that could not be read or was cut by the limits, and
    the resource types that were not read in full."""

    resources: list[dict] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    incomplete: set[str] = field(default_factory=set)


class ChartTooLarge(FhirError):
    """The EHR's answer is larger than Handoff reads for one chart."""


def chart_searches(
    patient_id: str,
    encounter_id: str | None,
    now: datetime,
    observation_days: int,
    types: tuple[str, ...] = ("Patient", "Observation", *CHART_TYPES),
) -> list[str]:
    """The reads and searches of one chart, in the order of the batch."""
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
    return searches


def read_chart(
    client: FhirClient,
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
    searches = chart_searches(patient_id, encounter_id, now, observation_days, types)
    return _ChartReader(client, limits or ChartLimits()).read(searches)


def _batch_of(urls: list[str]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": url}} for url in urls],
    }


def _type_of(search: str) -> str:
    """`Condition` of `Condition?patient=...`, `Patient` of `Patient/abc`."""
    return search.split("?")[0].split("/")[0]


NO_BATCH = (400, 404, 405, 422, 501)  # answers of an EHR without batch support
MAX_PAGES = 50  # next pages followed per search

#: OperationOutcome issue codes (http://hl7.org/fhir/issue-type) that say a search's answer
#: leaves records out: `suppressed` (consent, privacy or business rules, such as 42 CFR
#: Part 2 records without the patient's consent), `incomplete` (not every source answered),
#: `too-costly` and `throttled` (the server stopped early). An issue of severity error or
#: fatal in an answer that was otherwise given says the same.
WITHHELD_ISSUES = frozenset({"suppressed", "incomplete", "too-costly", "throttled"})
_REASON_CHARS = 200  # the EHR's words, shown to the physician: bounded


def withheld_reasons(outcome: Any) -> list[str]:
    """What an OperationOutcome that came with a search's answer says was left out of it:
    one reason per issue whose code is in WITHHELD_ISSUES or whose severity is error or
    fatal (its code and the EHR's words). Empty for hints and other warnings, and for
    anything that is not an OperationOutcome."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return []
    issues = outcome.get("issue")
    reasons = []
    for issue in issues if isinstance(issues, list) else ():
        if not isinstance(issue, dict):
            continue
        code: str = issue["code"] if isinstance(issue.get("code"), str) else "unknown"
        if code not in WITHHELD_ISSUES and issue.get("severity") not in ("error", "fatal"):
            continue
        details = issue.get("details")
        words: Any = issue.get("diagnostics") or (
            details.get("text") if isinstance(details, dict) else None
        )
        text: str = f"{code}: {words}" if isinstance(words, str) and words.strip() else code
        if len(text) > _REASON_CHARS:
            text = text[:_REASON_CHARS] + "…"
        reasons.append(text)
    return reasons


def bundle_outcomes(bundle: dict) -> list[Any]:
    """The OperationOutcomes a searchset carries about the search itself: entries of
    search.mode `outcome` (R4) and Bundle.issues (R5)."""
    found = [bundle.get("issues")] if isinstance(bundle.get("issues"), dict) else []
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        search = entry.get("search") if isinstance(entry, dict) else None
        if isinstance(search, dict) and search.get("mode") == "outcome":
            found.append(entry.get("resource"))
    return found


class _ChartReader:
    """One chart read: the batch, each search's next pages and the Medications that orders
    reference, within the limits. A part of an answer that is not what FHIR says it is (an
    entry list that is an object, a resource that is a string) is noted and skipped."""

    def __init__(self, client: FhirClient, limits: ChartLimits) -> None:
        self.client = client
        self.limits = limits
        self.bytes_left = limits.max_bytes
        self.result = ChartRead()
        self.cut: list[str] = []  # types cut by a limit, in order
        self.unreadable: dict[str, list[str]] = {}  # search type -> problems, in order
        self.withheld: dict[str, list[str]] = {}  # search type -> the EHR's reasons

    def read(self, searches: list[str]) -> ChartRead:
        self._read_all(searches)
        self._read_medications()
        return self.finish()

    def finish(self) -> ChartRead:
        """The result of what was read: resources once each, and a notice per problem."""
        self.result.resources = _dedupe_resources(self.result.resources)
        for rtype, problems in self.unreadable.items():
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            self.result.notices.append(
                f"Part of the EHR's {rtype} answer could not be read and was left out: "
                f"{problems[0]}{more}. Suggestions may be incomplete."
            )
        for rtype, reasons in self.withheld.items():
            self.result.notices.append(
                f"The EHR withheld some {rtype} records from Handoff "
                f"({'; '.join(dict.fromkeys(reasons))}). Suggestions may be incomplete."
            )
        if self.cut:
            self.result.notices.append(
                "The chart is larger than Handoff reads (at most "
                f"{self.limits.max_resources:,} resources and {_megabytes(self.limits.max_bytes)}"
                f"): not all of {', '.join(self.cut)} was read. Suggestions may be incomplete."
            )
        return self.result

    # the reads -------------------------------------------------------------------------

    def _read_all(self, searches: list[str]) -> None:
        """One batch; one search at a time where the EHR does not take batches."""
        try:
            answer = self._fetch("POST", self.client.base, _batch_of(searches))
        except FhirError as exc:
            if exc.status not in NO_BATCH:
                raise
            for url in searches:
                if "?" in url:
                    self._search(url, None)
                else:
                    self._take([self._fetch("GET", f"{self.client.base}/{url}")], _type_of(url))
            return
        self._batch_results(searches, answer)

    def _batch_results(self, searches: list[str], answer: dict, required: bool = True) -> None:
        """The resources of a batch-response, following each search's next pages. A refused
        read fails the chart read when `required`; otherwise it is skipped (a Medication the
        EHR will not give: the order naming it is then left out, with a notice)."""
        entries = answer.get("entry", [])
        if not isinstance(entries, list):
            raise FhirError("The EHR's answer to the chart read is not a Bundle Handoff can read.")
        for i, url in enumerate(searches):
            rtype = _type_of(url)
            if i >= len(entries):
                self._unreadable(rtype, "the EHR did not answer this search")
                continue
            entry = entries[i]
            if not isinstance(entry, dict):
                self._unreadable(rtype, "its batch entry is not an object")
                continue
            response = entry.get("response")
            status = str(response.get("status", "")) if isinstance(response, dict) else ""
            if not status.startswith("2") and not required:
                continue
            if not status.startswith("2"):
                raise FhirError(
                    f"The EHR refused to read {url.split('?')[0]} (HTTP {status[:3] or '?'}).",
                    status=int(status[:3]) if status[:3].isdigit() else None,
                )
            outcome = response.get("outcome") if isinstance(response, dict) else None
            for reason in withheld_reasons(outcome):
                self._withheld(rtype, reason)  # a 2xx answer with a note about the search
            resource = entry.get("resource")
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                self._unreadable(rtype, "the resource it sent is not a FHIR resource")
            elif resource["resourceType"] == "Bundle":
                self._search(None, resource, rtype)
            else:
                self._take([resource], rtype)

    def _search(self, url: str | None, bundle: dict | None, rtype: str | None = None) -> None:
        """A searchset (fetched from `url` unless given) and its next pages."""
        rtype = rtype or _type_of(url or "")
        for page in range(MAX_PAGES):
            if bundle is None:
                try:
                    bundle = self._fetch("GET", self._url(url or ""))
                except ChartTooLarge:
                    if not self.result.resources:
                        raise  # nothing read: the chart cannot be shown at all
                    self._cut(rtype)
                    return
                except FhirError as exc:
                    if page == 0:
                        raise  # the search itself failed, as a refused batch read does
                    # the pages before it are read; the rest is not: never "complete"
                    status = f"HTTP {exc.status}" if exc.status else "no answer"
                    self._unreadable(rtype, f"a next page could not be read ({status})")
                    return
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                self._unreadable(rtype, "a page of its answer is not a Bundle")
                for reason in withheld_reasons(bundle):  # an OperationOutcome says why
                    self._withheld(rtype, reason)
                return
            for outcome in bundle_outcomes(bundle):
                for reason in withheld_reasons(outcome):
                    self._withheld(rtype, reason)
            self._take(self._entries(bundle, rtype), rtype)
            url, readable = _next_page(bundle)
            bundle = None
            if not readable:  # a next page may exist that cannot be followed
                self._unreadable(rtype, "its Bundle.link is not a list of links with URLs")
            if url is None:
                return
            if self.cut:
                self._cut(rtype)
                return
        self._cut(rtype)  # more pages than Handoff follows

    def _read_medications(self) -> None:
        """Fetch Medications that orders reference but do not contain (Epic references them):
        without them a methadone order would be invisible to the rules."""
        have = {f"{r['resourceType']}/{r.get('id')}" for r in self.result.resources}
        missing = sorted(
            {
                ref
                for r in self.result.resources
                if isinstance(r.get("medicationReference"), dict)
                and isinstance(ref := r["medicationReference"].get("reference"), str)
                and ref
                and not ref.startswith("#")
                and _relative(ref) not in have
            }
        )
        if not missing or self.cut:
            return
        reads = [_relative(ref) for ref in missing]
        try:
            answer = self._fetch("POST", self.client.base, _batch_of(reads))
        except ChartTooLarge:
            self._cut("Medication")
            return
        except FhirError as exc:
            if exc.status not in NO_BATCH:
                raise
            for url in reads:
                try:
                    self._take([self._fetch("GET", f"{self.client.base}/{url}")], "Medication")
                except FhirError as refused:
                    if refused.status not in (403, 404, 410):
                        raise
            return
        self._batch_results(reads, answer, required=False)

    # parts -----------------------------------------------------------------------------

    def _entries(self, bundle: dict, rtype: str) -> list[dict]:
        """The resources of a searchset's entries; anything else is noted, not read."""
        entries = bundle.get("entry", [])
        if not isinstance(entries, list):
            self._unreadable(rtype, "its Bundle.entry is not a list")
            return []
        found = []
        for i, entry in enumerate(entries, start=1):
            if not isinstance(entry, dict):
                self._unreadable(rtype, f"entry {i} is not an object")
                continue
            search = entry.get("search")
            if isinstance(search, dict) and search.get("mode") == "outcome":
                continue  # a note about the search, not a match (OperationOutcome)
            resource = entry.get("resource")
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                self._unreadable(rtype, f"entry {i} has no FHIR resource")
                continue
            found.append(resource)
        return found

    def _take(self, resources: list, rtype: str) -> None:
        """Keep resources, up to the chart's resource limit."""
        room = self.limits.max_resources - len(self.result.resources)
        good = [
            r for r in resources if isinstance(r, dict) and isinstance(r.get("resourceType"), str)
        ]
        if len(good) < len(resources):
            self._unreadable(rtype, "the resource it sent is not a FHIR resource")
        if len(good) > room:
            self._cut(rtype)
        self.result.resources.extend(good[: max(room, 0)])

    def _unreadable(self, rtype: str, problem: str) -> None:
        self.unreadable.setdefault(rtype, []).append(problem)
        self.result.incomplete.add(rtype)

    def _withheld(self, rtype: str, reason: str) -> None:
        self.withheld.setdefault(rtype, []).append(reason)
        self.result.incomplete.add(rtype)

    def _cut(self, rtype: str) -> None:
        if rtype not in self.cut:
            self.cut.append(rtype)
        self.result.incomplete.add(rtype)

    # HTTP ------------------------------------------------------------------------------

    def _url(self, path_or_url: str) -> str:
        return (
            path_or_url if path_or_url.startswith("http") else f"{self.client.base}/{path_or_url}"
        )

    def _fetch(self, method: str, url: str, body: dict | None = None) -> dict:
        """One request whose answer counts against the chart's byte limit; an answer past
        the limit is not read on (ChartTooLarge)."""
        headers = self.client.headers()
        data = orjson.dumps(body) if body is not None else None
        try:
            # the EHR's shared keep-alive connections (a new connection per read cost more
            # than the read's own work on a local EHR)
            response = send(
                method, url, headers=headers, data=data, timeout=self.client.timeout, stream=True
            )
            try:
                content = _bounded_body(response, self.bytes_left)
            finally:
                response.close()
        except requests.Timeout as exc:
            raise FhirError("The EHR did not answer in time.", transient=True) from exc
        except requests.RequestException as exc:
            raise FhirError("The EHR could not be reached.", transient=True) from exc
        if content is None:
            raise ChartTooLarge(
                "The chart is larger than Handoff reads (more than "
                f"{_megabytes(self.limits.max_bytes)}); tell your informatics team.",
                status=response.status_code,
            )
        self.bytes_left -= len(content)
        response._content = content  # read once, bounded; parsed as any other answer
        return parse_response(response)


def _bounded_body(response: requests.Response, limit: int) -> bytes | None:
    """The (decoded) body, or None as soon as it is longer than `limit` bytes."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit and "Content-Encoding" not in response.headers:
        return None
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _megabytes(size: int) -> str:
    """A byte count in words: `32 MB`, or `1,000 bytes` below one megabyte."""
    return f"{size / (1024 * 1024):g} MB" if size >= 1024 * 1024 else f"{size:,} bytes"


def _next_page(bundle: dict) -> tuple[str | None, bool]:
    """The `next` link of a searchset (None: no next page), and whether `link` could be read
    (a list of objects, the next one with a URL)."""
    links = bundle.get("link", [])
    if not isinstance(links, list):
        return None, False
    for link in links:
        if not isinstance(link, dict):
            return None, False
        if link.get("relation") == "next":
            url = link.get("url")
            return (url, True) if isinstance(url, str) and url else (None, False)
    return None, True


def _dedupe_resources(resources: list[dict]) -> list[dict]:
    """The first of each Type/id (a resource matching two searches comes twice); resources
    without a string id are kept as they are, for the chart to name."""
    seen: dict[tuple[str, str], dict] = {}
    out = []
    for resource in resources:
        rid = resource.get("id")
        if not isinstance(rid, str):
            out.append(resource)
            continue
        key = (resource["resourceType"], rid)
        if key not in seen:
            seen[key] = resource
            out.append(resource)
    return out


def _relative(reference: str) -> str:
    """`Type/id` from a relative or absolute reference."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])
