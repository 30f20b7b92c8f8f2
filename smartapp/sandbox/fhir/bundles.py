"""Transaction and batch Bundles (POST [base]): each entry goes through the very same
`FhirService` methods as the REST interactions, so a search inside a batch behaves exactly like
a GET. Entries are parsed by `bundle_entries`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from sqlalchemy import Connection

from smartapp.sandbox.faults import RESTRICTED_LABELS, Faults, current_faults
from smartapp.sandbox.fhir.access import Access
from smartapp.sandbox.fhir.bundle_entries import BundleEntry, parse_entry, rewrite_references
from smartapp.sandbox.fhir.errors import FhirError, operation_outcome, status_line
from smartapp.sandbox.fhir.results import Key, Outcome, new_id
from smartapp.sandbox.fhir.search import EXPIRED_PAGE_PARAM
from smartapp.sandbox.fhirtime import format_instant

if TYPE_CHECKING:
    from smartapp.sandbox.fhir.service import FhirService


class Bundles:
    """Runs the entries of one Bundle against `service`."""

    def __init__(self, service: FhirService) -> None:
        self.service = service

    def process(self, bundle: object, access: Access, *, minimal: bool = False) -> dict:
        """POST [base] with a transaction or batch Bundle."""
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise FhirError(400, "POST to the base URL takes a Bundle", "structure")
        kind = bundle.get("type")
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            raise FhirError(400, "Bundle.entry must be an array", "structure")
        if kind == "transaction":
            self.service.write_rules().check_transaction()
            return self.transaction(entries, access, minimal=minimal)
        if kind == "batch":
            return self.batch(entries, access, minimal=minimal)
        raise FhirError(400, f"Bundle.type must be transaction or batch, not '{kind}'", "value")

    def _run(
        self,
        conn: Connection,
        entry: BundleEntry,
        access: Access,
        pending: dict[Key, dict] | None,
    ) -> Outcome | dict:
        """Perform one parsed entry; returns an Outcome, or a Bundle for searches."""
        assert entry.rtype is not None
        if entry.method == "GET":
            if entry.rid is None:
                faults = current_faults()
                pairs = parse_qsl(entry.query, keep_blank_values=True)
                page_size = faults.get("page_size") if faults else None
                if page_size:
                    pairs = _paged(pairs, page_size)
                found = self.service.search(
                    conn, entry.rtype, pairs, access, compartment=entry.compartment
                )
                return _with_search_faults(found, faults) if faults else found
            if entry.vid is not None:
                return self.service.vread(conn, entry.rtype, entry.rid, entry.vid, access)
            return self.service.read(conn, entry.rtype, entry.rid, access)
        if entry.method == "POST":
            if entry.existing is not None:
                return self.service.existing_outcome(*entry.existing, access)
            return self.service.create(
                conn,
                entry.rtype,
                entry.resource,
                access,
                if_none_exist=None if pending is not None else entry.if_none_exist,
                assigned_id=entry.rid,
                pending=pending,
            )
        if entry.method == "PUT":
            assert entry.rid is not None
            return self.service.update(
                conn,
                entry.rtype,
                entry.rid,
                entry.resource,
                access,
                if_match=entry.if_match,
                pending=pending,
            )
        assert entry.rid is not None
        return self.service.delete(conn, entry.rtype, entry.rid, access)

    def _response_entry(self, result: Outcome | dict, minimal: bool) -> dict:
        if isinstance(result, dict):
            return {"resource": result, "response": {"status": "200 OK"}}
        response: dict = {"status": status_line(result.status)}
        if result.location:
            response["location"] = result.location
            response["etag"] = result.etag
        if result.last_updated:
            response["lastModified"] = result.last_updated
        out: dict = {}
        if result.rtype and result.rid and result.status != 204:
            out["fullUrl"] = self.service.full_url(result.rtype, result.rid)
        if result.resource is not None and not minimal:
            out["resource"] = result.resource
        out["response"] = response
        return out

    def transaction(self, raw_entries: list, access: Access, *, minimal: bool = False) -> dict:
        """All entries in one database transaction; any failure rolls everything back."""
        entries = [parse_entry(i, e, self.service.fhir_base) for i, e in enumerate(raw_entries)]
        results: list[Outcome | dict | None] = [None] * len(entries)
        with self.service.db.write() as conn:
            refmap: dict[str, str] = {}
            for entry in entries:
                if entry.full_url and entry.full_url in refmap:
                    raise FhirError(
                        400,
                        f"Bundle.entry[{entry.index}]: duplicate fullUrl {entry.full_url}",
                        "duplicate",
                    )
                if entry.method == "POST":
                    self._plan_post(conn, entry)
                if entry.full_url and entry.rid and entry.method in ("POST", "PUT"):
                    refmap[entry.full_url] = f"{entry.rtype}/{entry.rid}"
            pending: dict[Key, dict] = {}
            for entry in entries:
                if isinstance(entry.resource, dict) and entry.method in ("POST", "PUT"):
                    rewrite_references(entry.resource, refmap)
                    if entry.existing is None and entry.rid:
                        pending[(str(entry.rtype), entry.rid)] = {**entry.resource, "id": entry.rid}
            for method in ("DELETE", "POST", "PUT", "GET"):
                for entry in entries:
                    if entry.method != method:
                        continue
                    try:
                        results[entry.index] = self._run(conn, entry, access, pending)
                    except FhirError as err:
                        err.message = (
                            f"Bundle.entry[{entry.index}] ({entry.method} "
                            f"{entry.rtype}): {err.message}"
                        )
                        err.expression = err.expression or f"Bundle.entry[{entry.index}]"
                        raise
        return self._response_bundle("transaction-response", results, minimal)

    def _plan_post(self, conn: Connection, entry: BundleEntry) -> None:
        """Resolve If-None-Exist and assign the id of a transaction POST before any write."""
        assert entry.rtype is not None
        self.service.check_type(entry.rtype)
        if entry.if_none_exist and self.service.write_rules().conditional_create:
            try:
                entry.existing = self.service.conditional_match(
                    conn, entry.rtype, entry.if_none_exist
                )
            except FhirError as err:
                err.message = f"Bundle.entry[{entry.index}]: {err.message}"
                raise
            if entry.existing is not None:
                entry.rid = entry.existing[0]["id"]
                return
        entry.rid = new_id()

    def batch(self, raw_entries: list, access: Access, *, minimal: bool = False) -> dict:
        """Each entry on its own; a failing entry gets an OperationOutcome, others proceed."""
        results: list[Outcome | dict | FhirError] = []
        parsed: list[BundleEntry | FhirError] = []
        for i, raw in enumerate(raw_entries):
            try:
                parsed.append(parse_entry(i, raw, self.service.fhir_base))
            except FhirError as err:
                parsed.append(err)
        reads_only = all(isinstance(p, BundleEntry) and p.method == "GET" for p in parsed)
        if reads_only:
            # One read transaction: the whole chart comes from one consistent snapshot.
            with self.service.db.read() as conn:
                for entry in parsed:
                    assert isinstance(entry, BundleEntry)
                    results.append(self._guarded(conn, entry, access))
        else:
            for entry in parsed:
                if isinstance(entry, FhirError):
                    results.append(entry)
                    continue
                opener = self.service.db.read if entry.method == "GET" else self.service.db.write
                try:
                    with opener() as conn:
                        results.append(self._run(conn, entry, access, None))
                except FhirError as err:
                    results.append(err)
        return self._response_bundle("batch-response", results, minimal)

    def _guarded(
        self, conn: Connection, entry: BundleEntry, access: Access
    ) -> Outcome | dict | FhirError:
        try:
            return self._run(conn, entry, access, None)
        except FhirError as err:
            return err

    def _response_bundle(self, kind: str, results: list, minimal: bool) -> dict:
        entries = []
        for result in results:
            if isinstance(result, FhirError):
                entries.append(
                    {
                        "response": {
                            "status": status_line(result.status),
                            "outcome": result.outcome(),
                        }
                    }
                )
            else:
                entries.append(self._response_entry(result, minimal))
        return {
            "resourceType": "Bundle",
            "id": new_id(),
            "type": kind,
            "meta": {"lastUpdated": format_instant(datetime.now(UTC))},
            "entry": entries,
        }


# ---------------------------------------------------------------------------------------
# chart-read faults on searches inside a Bundle (faults.py: page_size, withhold_restricted,
# expire_next_pages)


def _paged(pairs: list[tuple[str, str]], page_size: int) -> list[tuple[str, str]]:
    """The query with `_count` at most `page_size` (the EHR's own page size)."""
    asked = [int(v) for k, v in pairs if k == "_count" and v.isdigit()]
    count = min([page_size, *asked])
    return [(k, v) for k, v in pairs if k != "_count"] + [("_count", str(count))]


def _with_search_faults(bundle: dict, faults: Faults) -> dict:
    """A searchset as the faulty EHR answers it: restricted records withheld with an
    OperationOutcome entry saying how many, and the next link expired."""
    if faults.on("withhold_restricted"):
        entries = bundle.get("entry") or []
        kept = [e for e in entries if not _restricted(e.get("resource") or {})]
        withheld = len(entries) - len(kept)
        if withheld:
            outcome = operation_outcome(
                f"{withheld} record(s) withheld: consent required to disclose them (42 CFR Part 2)",
                code="suppressed",
                severity="warning",
            )
            kept.append({"resource": outcome, "search": {"mode": "outcome"}})
            bundle["entry"] = kept
            bundle["total"] = max(0, int(bundle.get("total", 0)) - withheld)
    if faults.on("expire_next_pages"):
        for link in bundle.get("link") or []:
            if link.get("relation") == "next":
                link["url"] += f"&{EXPIRED_PAGE_PARAM}=1"
    return bundle


def _restricted(resource: dict) -> bool:
    """Whether a resource carries one of RESTRICTED_LABELS in meta.security."""
    meta = resource.get("meta")
    labels = meta.get("security") if isinstance(meta, dict) else None
    return any(
        isinstance(label, dict) and (label.get("system"), label.get("code")) in RESTRICTED_LABELS
        for label in labels or ()
    )
