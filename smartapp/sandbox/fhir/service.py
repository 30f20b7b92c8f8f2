"""FHIR interactions on the database: read, vread, search, create, update, delete, bundles.

The Flask views are thin wrappers around this service, and batch/transaction entries go
through the very same methods (`bundles`), so a search inside a batch behaves exactly like a
GET. Every method takes an `Access` that decides what the caller may see and write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Connection, Row, false, func, select

from smartapp.sandbox.db import Database, history, resources, search_index
from smartapp.sandbox.fhir.access import CREATE, DELETE, READ, SEARCH, UPDATE, Access
from smartapp.sandbox.fhir.bundles import Bundles
from smartapp.sandbox.fhir.errors import FhirError
from smartapp.sandbox.fhir.indexing import compartment_patients, index_rows, split_reference
from smartapp.sandbox.fhir.resource_types import R4_RESOURCE_TYPES
from smartapp.sandbox.fhir.results import Key, Outcome, PreparedResource, new_id
from smartapp.sandbox.fhir.search import (
    criteria_sql,
    parse_search,
    sort_sql,
)
from smartapp.sandbox.fhir.searchset import included_resources, searchset
from smartapp.sandbox.fhir.validation import (
    check_references,
    check_rules,
    check_structure,
)
from smartapp.sandbox.fhir.write_rules import WriteRules
from smartapp.sandbox.fhirtime import format_instant, to_ms

__all__ = ["FhirService", "Key", "Outcome", "PreparedResource", "new_id"]


class FhirService:
    """The FHIR store of one sandbox: `fhir_base` is the absolute base URL of the API.

    `write_rules` is asked on every write for what the API accepts (write_rules.py: a plain
    FHIR server by default, or an Epic- or Oracle Health-like one).
    """

    def __init__(
        self,
        db: Database,
        fhir_base: str,
        write_rules: Callable[[], WriteRules] | None = None,
    ) -> None:
        self.db = db
        self.fhir_base = fhir_base.rstrip("/")
        self.write_rules: Callable[[], WriteRules] = write_rules or WriteRules

    # -- helpers ---------------------------------------------------------------------------

    def split(self, reference: str) -> tuple[str | None, str]:
        """(type, id) of a reference to this server, (None, reference) otherwise."""
        return split_reference(reference, self.fhir_base)

    def full_url(self, rtype: str, rid: str) -> str:
        """Absolute URL of a resource."""
        return f"{self.fhir_base}/{rtype}/{rid}"

    @staticmethod
    def check_type(rtype: str) -> None:
        """404 for a path segment that is not an R4 resource type."""
        if rtype not in R4_RESOURCE_TYPES:
            raise FhirError(404, f"Unknown resource type '{rtype}'", "not-supported")

    @staticmethod
    def _row(conn: Connection, rtype: str, rid: str) -> Row | None:
        r = resources.c
        return conn.execute(
            select(r.version, r.deleted, r.patient_id, r.last_updated, r.body).where(
                r.type == rtype, r.id == rid
            )
        ).first()

    def _exists(self, conn: Connection, key: Key, pending: dict[Key, dict] | None) -> bool:
        if pending and key in pending:
            return True
        row = self._row(conn, *key)
        return row is not None and not row.deleted

    def patients_of(
        self,
        conn: Connection | None,
        rtype: str,
        resource: dict,
        pending: dict[Key, dict] | None = None,
    ) -> list[str | None]:
        """Patient compartments of a resource; a Provenance takes those of its targets."""
        if rtype != "Provenance":
            return list(compartment_patients(rtype, resource, self.fhir_base))
        found: list[str | None] = []
        for target in resource.get("target") or []:
            ref = target.get("reference") if isinstance(target, dict) else None
            ttype, tid = self.split(ref) if isinstance(ref, str) else (None, "")
            patient: str | None = None
            if ttype == "Patient":
                patient = tid
            elif ttype and pending and (ttype, tid) in pending:
                patients = compartment_patients(ttype, pending[(ttype, tid)], self.fhir_base)
                patient = patients[0] if patients else None
            elif ttype and conn is not None:
                row = self._row(conn, ttype, tid)
                patient = row.patient_id if row is not None else None
            if patient not in found:
                found.append(patient)
        return found

    def prepare(
        self,
        rtype: str,
        rid: str,
        resource: dict,
        version: int,
        now: datetime,
        patients: list[str | None],
    ) -> PreparedResource:
        """Set id and meta (versionId, lastUpdated) and compute the index rows."""
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = format_instant(now)
        body: dict = {"resourceType": rtype, "id": rid, "meta": meta}
        body.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta"))
        patient_id = next((p for p in patients if p), None)
        return PreparedResource(
            rtype,
            rid,
            body,
            version,
            to_ms(now),
            patient_id,
            index_rows(rtype, body, self.fhir_base),
        )

    def _store(
        self,
        conn: Connection,
        rtype: str,
        rid: str,
        resource: dict,
        previous: Row | None,
        patients: list[str | None],
    ) -> Outcome:
        version = previous.version + 1 if previous is not None else 1
        prepared = self.prepare(rtype, rid, resource, version, datetime.now(UTC), patients)
        if previous is not None:
            self._archive(conn, rtype, rid, previous)
            conn.execute(
                resources.update()
                .where(resources.c.type == rtype, resources.c.id == rid)
                .values(**prepared.row())
            )
        else:
            conn.execute(resources.insert(), [prepared.row()])
        rows = prepared.index_dicts()
        if rows:
            conn.execute(search_index.insert(), rows)
        status = 201 if previous is None or previous.deleted else 200
        return Outcome(
            status, prepared.resource, rtype, rid, version, prepared.resource["meta"]["lastUpdated"]
        )

    @staticmethod
    def _archive(conn: Connection, rtype: str, rid: str, previous: Row) -> None:
        """Move the current version to history and drop its index rows."""
        conn.execute(
            history.insert(),
            [
                {
                    "type": rtype,
                    "id": rid,
                    "version": previous.version,
                    "last_updated": previous.last_updated,
                    "deleted": previous.deleted,
                    "body": previous.body,
                }
            ],
        )
        conn.execute(
            search_index.delete().where(
                search_index.c.res_type == rtype, search_index.c.res_id == rid
            )
        )

    def _validate_write(
        self,
        conn: Connection,
        interaction: str,
        rtype: str,
        resource: dict,
        access: Access,
        pending: dict[Key, dict] | None,
    ) -> list[str | None]:
        """Compartment (403), then rules, the EHR's shape constraints and references (422);
        returns the patients."""
        patients = self.patients_of(conn, rtype, resource, pending)
        access.check_write(interaction, rtype, resource, patients)
        check_rules(rtype, resource)

        def exists(target: str, ident: str) -> bool:
            return self._exists(conn, (target, ident), pending)

        self.write_rules().check_shape(rtype, resource, self.split, exists)
        check_references(rtype, resource, self.split, exists)
        return patients

    # -- reads -----------------------------------------------------------------------------

    def read(self, conn: Connection, rtype: str, rid: str, access: Access) -> Outcome:
        """GET Type/id."""
        self.check_type(rtype)
        access.require(READ, rtype)
        row = self._row(conn, rtype, rid)
        if row is None:
            raise FhirError(404, f"{rtype}/{rid} is not known")
        if row.deleted:
            raise FhirError(410, f"{rtype}/{rid} has been deleted")
        resource = orjson.loads(row.body)
        if not access.can_read(rtype, resource, row.patient_id):
            raise FhirError(403, f"The granted scopes do not cover {rtype}/{rid}")
        meta = resource.get("meta") or {}
        return Outcome(200, resource, rtype, rid, row.version, meta.get("lastUpdated"))

    def vread(self, conn: Connection, rtype: str, rid: str, vid: str, access: Access) -> Outcome:
        """GET Type/id/_history/vid."""
        current = self.read(conn, rtype, rid, access)
        if vid == str(current.version):
            return current
        h = history.c
        row = None
        if vid.isdigit():
            row = conn.execute(
                select(h.body, h.deleted).where(h.type == rtype, h.id == rid, h.version == int(vid))
            ).first()
        if row is None:
            raise FhirError(404, f"{rtype}/{rid} has no version {vid}")
        if row.deleted:
            raise FhirError(410, f"Version {vid} of {rtype}/{rid} is a deletion")
        resource = orjson.loads(row.body)
        return Outcome(200, resource, rtype, rid, int(vid), resource["meta"].get("lastUpdated"))

    def history(
        self, conn: Connection, rtype: str, rid: str, access: Access, count: int = 50
    ) -> dict:
        """GET Type/id/_history: a history Bundle of the resource's versions, newest first
        (at most `count`); a deletion is an entry without a resource."""
        current = self.read(conn, rtype, rid, access)  # 404/410/403 as a read
        h = history.c
        older = conn.execute(
            select(h.version, h.body, h.deleted)
            .where(h.type == rtype, h.id == rid)
            .order_by(h.version.desc())
            .limit(max(count - 1, 0))
        ).all()
        versions = [(current.version, current.resource)] + [
            (row.version, None if row.deleted else orjson.loads(row.body)) for row in older
        ]
        entries = []
        for version, body in versions[: max(count, 1)]:
            url = self.full_url(rtype, rid)
            entry: dict = {"fullUrl": url}
            if body is not None:
                entry["resource"] = body
            method = "POST" if version == 1 else ("PUT" if body is not None else "DELETE")
            entry["request"] = {"method": method, "url": f"{rtype}/{rid}"}
            entry["response"] = {"status": "200", "etag": f'W/"{version}"'}
            entries.append(entry)
        return {
            "resourceType": "Bundle",
            "type": "history",
            "total": len(entries),
            "link": [{"relation": "self", "url": f"{self.full_url(rtype, rid)}/_history"}],
            "entry": entries,
        }

    def search(
        self,
        conn: Connection,
        rtype: str,
        pairs: Iterable[tuple[str, str]],
        access: Access,
        *,
        strict: bool = True,
        compartment: str | None = None,
    ) -> dict:
        """A searchset Bundle for GET Type?..., POST Type/_search or Patient/id/Type?..."""
        self.check_type(rtype)
        access.require(SEARCH, rtype)
        request = parse_search(rtype, pairs, self.fhir_base, strict=strict)
        r = resources.c
        conditions = [r.type == rtype, r.deleted == false(), *criteria_sql(rtype, request.criteria)]
        if compartment is not None:
            conditions.append(
                r.id == compartment if rtype == "Patient" else r.patient_id == compartment
            )
        limit = access.search_filter(rtype)
        if limit is not None:
            conditions.append(limit)
        total = conn.execute(
            select(func.count()).select_from(resources).where(*conditions)
        ).scalar_one()
        matches: list[dict] = []
        if not request.summary_count and request.count > 0:
            rows = conn.execute(
                select(r.body)
                .where(*conditions)
                .order_by(*sort_sql(rtype, request.sort))
                .limit(request.count)
                .offset(request.offset)
            ).all()
            matches = [orjson.loads(row.body) for row in rows]
        included = included_resources(conn, request, matches, access)
        path = f"{self.fhir_base}/{rtype}"
        if compartment is not None:
            path = f"{self.fhir_base}/Patient/{compartment}/{rtype}"
        return searchset(request, total, matches, included, path, self.full_url)

    def conditional_match(
        self, conn: Connection, rtype: str, query: str
    ) -> tuple[dict, str | None] | None:
        """The one resource an If-None-Exist query matches (None: no match; 412: several)."""
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
        if not pairs:
            raise FhirError(400, f"Empty conditional criteria '{query}'")
        request = parse_search(rtype, pairs, self.fhir_base)
        r = resources.c
        rows = conn.execute(
            select(r.body, r.patient_id)
            .where(r.type == rtype, r.deleted == false(), *criteria_sql(rtype, request.criteria))
            .limit(2)
        ).all()
        if len(rows) > 1:
            raise FhirError(
                412, f"If-None-Exist '{query}' matches more than one {rtype}", "duplicate"
            )
        return (orjson.loads(rows[0].body), rows[0].patient_id) if rows else None

    # -- writes ----------------------------------------------------------------------------

    def create(
        self,
        conn: Connection,
        rtype: str,
        resource: object,
        access: Access,
        *,
        if_none_exist: str | None = None,
        assigned_id: str | None = None,
        pending: dict[Key, dict] | None = None,
    ) -> Outcome:
        """POST Type (with optional If-None-Exist conditional create, unless the write rules
        ignore it as an EHR without conditional create does)."""
        self.check_type(rtype)
        rules = self.write_rules()
        rules.check_create(rtype)
        resource = check_structure(rtype, resource)
        access.require(CREATE, rtype)
        if if_none_exist and rules.conditional_create:
            existing = self.conditional_match(conn, rtype, if_none_exist)
            if existing is not None:
                return self.existing_outcome(*existing, access)
        patients = self._validate_write(conn, CREATE, rtype, resource, access, pending)
        return self._store(conn, rtype, assigned_id or new_id(), resource, None, patients)

    def existing_outcome(self, resource: dict, patient_id: str | None, access: Access) -> Outcome:
        """Outcome for a conditional create that matched: readable, or writable by the caller."""
        rtype, rid = resource["resourceType"], resource["id"]
        if not access.can_read(rtype, resource, patient_id):
            access.check_write(CREATE, rtype, resource, [patient_id] if patient_id else [])
        meta = resource.get("meta") or {}
        return Outcome(
            200, resource, rtype, rid, int(meta.get("versionId", 1)), meta.get("lastUpdated")
        )

    def update(
        self,
        conn: Connection,
        rtype: str,
        rid: str,
        resource: object,
        access: Access,
        *,
        if_match: str | None = None,
        pending: dict[Key, dict] | None = None,
    ) -> Outcome:
        """PUT Type/id (creates the resource with that id when it does not exist)."""
        self.check_type(rtype)
        resource = check_structure(rtype, resource, expected_id=rid)
        access.require(UPDATE, rtype)
        previous = self._row(conn, rtype, rid)
        if previous is None or previous.deleted:
            self.write_rules().check_create(rtype)  # update-as-create is a create
        if if_match is not None:
            expected = if_match.removeprefix("W/").strip('"')
            if previous is None or previous.deleted or str(previous.version) != expected:
                raise FhirError(
                    412,
                    f"If-Match {if_match} does not match the current version of {rtype}/{rid}",
                    "conflict",
                )
        if previous is not None and not previous.deleted:
            old = orjson.loads(previous.body)
            access.check_write(UPDATE, rtype, old, self.patients_of(conn, rtype, old, pending))
        patients = self._validate_write(conn, UPDATE, rtype, resource, access, pending)
        return self._store(conn, rtype, rid, resource, previous, patients)

    def delete(self, conn: Connection, rtype: str, rid: str, access: Access) -> Outcome:
        """DELETE Type/id (idempotent: deleting nothing is 204 too)."""
        self.check_type(rtype)
        access.require(DELETE, rtype)
        previous = self._row(conn, rtype, rid)
        if previous is None or previous.deleted:
            return Outcome(204)
        old = orjson.loads(previous.body)
        access.check_write(DELETE, rtype, old, self.patients_of(conn, rtype, old))
        self._archive(conn, rtype, rid, previous)
        conn.execute(
            resources.update()
            .where(resources.c.type == rtype, resources.c.id == rid)
            .values(
                version=previous.version + 1, deleted=True, last_updated=to_ms(datetime.now(UTC))
            )
        )
        return Outcome(204, None, rtype, rid, previous.version + 1)

    # -- bundles (smartapp.sandbox.fhir.bundles) -------------------------------------------

    def process_bundle(self, bundle: object, access: Access, *, minimal: bool = False) -> dict:
        """POST [base] with a transaction or batch Bundle."""
        return Bundles(self).process(bundle, access, minimal=minimal)

    def transaction(self, raw_entries: list, access: Access, *, minimal: bool = False) -> dict:
        """All entries in one database transaction; any failure rolls everything back."""
        return Bundles(self).transaction(raw_entries, access, minimal=minimal)

    def batch(self, raw_entries: list, access: Access, *, minimal: bool = False) -> dict:
        """Each entry on its own; a failing entry gets an OperationOutcome, others proceed."""
        return Bundles(self).batch(raw_entries, access, minimal=minimal)
