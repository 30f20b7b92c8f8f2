"""FHIR interactions on the database: read, vread, search, create, update, delete, bundles.

The Flask views are thin wrappers around this service, and batch/transaction entries go
through the very same methods, so a search inside a batch behaves exactly like a GET.
Every method takes an `Access` that decides what the caller may see and write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from sqlalchemy import Connection, Row, false, func, select

from smartapp.sandbox.db import Database, history, resources, search_index
from smartapp.sandbox.fhir.access import CREATE, DELETE, READ, SEARCH, UPDATE, Access
from smartapp.sandbox.fhir.errors import FhirError, status_line
from smartapp.sandbox.fhir.params import compartment_patients, index_rows, split_reference
from smartapp.sandbox.fhir.resource_types import R4_RESOURCE_TYPES
from smartapp.sandbox.fhir.search import (
    SearchRequest,
    criteria_sql,
    parse_search,
    sort_sql,
)
from smartapp.sandbox.fhir.validation import (
    check_references,
    check_rules,
    check_structure,
)
from smartapp.sandbox.fhir.write_rules import WriteRules
from smartapp.sandbox.fhirtime import format_instant, to_ms

Key = tuple[str, str]


@dataclass
class Outcome:
    """Result of one interaction: HTTP status and, for single resources, version data."""

    status: int
    resource: dict | None = None
    rtype: str | None = None
    rid: str | None = None
    version: int | None = None
    last_updated: str | None = None

    @property
    def location(self) -> str | None:
        """Relative versioned location, e.g. ServiceRequest/abc/_history/1."""
        if self.rtype and self.rid and self.version:
            return f"{self.rtype}/{self.rid}/_history/{self.version}"
        return None

    @property
    def etag(self) -> str | None:
        """Weak ETag of the version."""
        return f'W/"{self.version}"' if self.version else None


@dataclass
class PreparedResource:
    """A resource ready to store: its row values and its search index rows."""

    rtype: str
    rid: str
    resource: dict
    version: int
    last_updated_ms: int
    patient_id: str | None
    index: list[tuple]

    def row(self) -> dict:
        """Values for the resources table."""
        return {
            "type": self.rtype,
            "id": self.rid,
            "version": self.version,
            "last_updated": self.last_updated_ms,
            "patient_id": self.patient_id,
            "deleted": False,
            "body": orjson.dumps(self.resource),
        }

    def index_dicts(self) -> list[dict]:
        """Values for the search index table."""
        return [
            {
                "res_type": self.rtype,
                "res_id": self.rid,
                "param": p,
                "system": s,
                "value": v,
                "lo": lo,
                "hi": hi,
            }
            for p, s, v, lo, hi in self.index
        ]


@dataclass
class _Entry:
    """A parsed bundle entry."""

    index: int
    method: str
    rtype: str | None
    rid: str | None
    vid: str | None
    query: str
    compartment: str | None
    resource: dict | None
    full_url: str | None
    if_none_exist: str | None
    if_match: str | None
    existing: tuple[dict, str | None] | None = None


def new_id() -> str:
    """A server-assigned resource id."""
    return str(uuid.uuid4())


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
        included = self._includes(conn, request, matches, access)
        path = f"{self.fhir_base}/{rtype}"
        if compartment is not None:
            path = f"{self.fhir_base}/Patient/{compartment}/{rtype}"
        return self._searchset(request, total, matches, included, path)

    def _includes(
        self, conn: Connection, request: SearchRequest, matches: list[dict], access: Access
    ) -> list[dict]:
        if not matches or not (request.include or request.revinclude):
            return []
        ids = [m["id"] for m in matches]
        seen = {(request.rtype, i) for i in ids}
        wanted: dict[str, set[str]] = {}
        x = search_index.c
        for source, param, target in request.include:
            if source != request.rtype:
                continue
            query = select(x.system, x.value).where(
                x.res_type == source, x.param == param, x.res_id.in_(ids), x.system.is_not(None)
            )
            if target:
                query = query.where(x.system == target)
            for system, value in conn.execute(query):
                wanted.setdefault(system, set()).add(value)
        for source, param, target in request.revinclude:
            if target and target != request.rtype:
                continue
            query = select(x.res_id).where(
                x.res_type == source,
                x.param == param,
                x.system == request.rtype,
                x.value.in_(ids),
            )
            wanted.setdefault(source, set()).update(conn.execute(query).scalars())
        included: list[dict] = []
        r = resources.c
        for rtype, rids in wanted.items():
            rows = conn.execute(
                select(r.id, r.patient_id, r.body).where(
                    r.type == rtype, r.id.in_(sorted(rids)), r.deleted == false()
                )
            )
            for row in rows:
                if (rtype, row.id) in seen:
                    continue
                resource = orjson.loads(row.body)
                if access.can_read(rtype, resource, row.patient_id):
                    seen.add((rtype, row.id))
                    included.append(resource)
        return included

    def _searchset(
        self,
        request: SearchRequest,
        total: int,
        matches: list[dict],
        included: list[dict],
        path: str,
    ) -> dict:
        def link(relation: str, offset: int) -> dict:
            query = urlencode(request.link_pairs(offset), safe="|,:/")
            return {"relation": relation, "url": f"{path}?{query}"}

        links = [link("self", request.offset)]
        if request.count and not request.summary_count:
            links.append(link("first", 0))
            if request.offset + request.count < total:
                links.append(link("next", request.offset + request.count))
            if request.offset > 0:
                links.append(link("previous", max(0, request.offset - request.count)))
        entries = [
            {
                "fullUrl": self.full_url(m["resourceType"], m["id"]),
                "resource": m,
                "search": {"mode": "match"},
            }
            for m in matches
        ] + [
            {
                "fullUrl": self.full_url(i["resourceType"], i["id"]),
                "resource": i,
                "search": {"mode": "include"},
            }
            for i in included
        ]
        bundle: dict = {
            "resourceType": "Bundle",
            "id": new_id(),
            "meta": {"lastUpdated": format_instant(datetime.now(UTC))},
            "type": "searchset",
            "total": total,
            "link": links,
        }
        if entries:
            bundle["entry"] = entries
        return bundle

    def _conditional_match(
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
            existing = self._conditional_match(conn, rtype, if_none_exist)
            if existing is not None:
                return self._existing(*existing, access)
        patients = self._validate_write(conn, CREATE, rtype, resource, access, pending)
        return self._store(conn, rtype, assigned_id or new_id(), resource, None, patients)

    def _existing(self, resource: dict, patient_id: str | None, access: Access) -> Outcome:
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

    # -- bundles ---------------------------------------------------------------------------

    def process_bundle(self, bundle: object, access: Access, *, minimal: bool = False) -> dict:
        """POST [base] with a transaction or batch Bundle."""
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise FhirError(400, "POST to the base URL takes a Bundle", "structure")
        kind = bundle.get("type")
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            raise FhirError(400, "Bundle.entry must be an array", "structure")
        if kind == "transaction":
            self.write_rules().check_transaction()
            return self.transaction(entries, access, minimal=minimal)
        if kind == "batch":
            return self.batch(entries, access, minimal=minimal)
        raise FhirError(400, f"Bundle.type must be transaction or batch, not '{kind}'", "value")

    def _parse_entry(self, index: int, entry: object) -> _Entry:
        where = f"Bundle.entry[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
            raise FhirError(
                400, f"{where}: entry.request is required", "required", expression=where
            )
        request = entry["request"]
        method = str(request.get("method", "")).upper()
        if method not in ("GET", "POST", "PUT", "DELETE"):
            raise FhirError(
                405 if method in ("PATCH", "HEAD") else 400,
                f"{where}: method '{method}' is not supported",
                "not-supported",
                expression=where,
            )
        url = request.get("url")
        if not isinstance(url, str) or not url:
            raise FhirError(400, f"{where}: request.url is required", "required", expression=where)
        parts = urlsplit(url)
        path = parts.path
        if parts.scheme:
            if not url.startswith(self.fhir_base + "/"):
                raise FhirError(400, f"{where}: {url} is not on this server", expression=where)
            path = urlsplit(url[len(self.fhir_base) :]).path
        segments = [s for s in path.split("/") if s]
        rtype = segments[0] if segments else None
        rid = vid = compartment = None
        if len(segments) == 2:
            rid = segments[1]
        elif len(segments) == 3 and segments[0] == "Patient":
            compartment, rtype = segments[1], segments[2]
        elif len(segments) == 4 and segments[2] == "_history":
            rid, vid = segments[1], segments[3]
        elif len(segments) != 1:
            raise FhirError(400, f"{where}: cannot interpret url '{url}'", expression=where)
        if rtype is None:
            raise FhirError(400, f"{where}: url '{url}' names no resource type", expression=where)
        resource = entry.get("resource")
        if method in ("POST", "PUT"):
            if resource is None:
                raise FhirError(
                    400, f"{where}: {method} needs a resource", "required", expression=where
                )
            if method == "POST" and rid is not None:
                raise FhirError(
                    400, f"{where}: POST goes to a type, not to '{url}'", expression=where
                )
            if method == "PUT" and rid is None:
                raise FhirError(
                    400,
                    f"{where}: PUT needs Type/id (conditional update is not supported)",
                    "not-supported",
                    expression=where,
                )
        if method == "DELETE" and rid is None:
            raise FhirError(
                400, f"{where}: DELETE needs Type/id", "not-supported", expression=where
            )
        return _Entry(
            index=index,
            method=method,
            rtype=rtype,
            rid=rid,
            vid=vid,
            query=parts.query,
            compartment=compartment,
            resource=resource,
            full_url=entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None,
            if_none_exist=request.get("ifNoneExist"),
            if_match=request.get("ifMatch"),
        )

    def _run(
        self,
        conn: Connection,
        entry: _Entry,
        access: Access,
        pending: dict[Key, dict] | None,
    ) -> Outcome | dict:
        """Perform one parsed entry; returns an Outcome, or a Bundle for searches."""
        assert entry.rtype is not None
        if entry.method == "GET":
            if entry.rid is None:
                pairs = parse_qsl(entry.query, keep_blank_values=True)
                return self.search(conn, entry.rtype, pairs, access, compartment=entry.compartment)
            if entry.vid is not None:
                return self.vread(conn, entry.rtype, entry.rid, entry.vid, access)
            return self.read(conn, entry.rtype, entry.rid, access)
        if entry.method == "POST":
            if entry.existing is not None:
                return self._existing(*entry.existing, access)
            return self.create(
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
            return self.update(
                conn,
                entry.rtype,
                entry.rid,
                entry.resource,
                access,
                if_match=entry.if_match,
                pending=pending,
            )
        assert entry.rid is not None
        return self.delete(conn, entry.rtype, entry.rid, access)

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
            out["fullUrl"] = self.full_url(result.rtype, result.rid)
        if result.resource is not None and not minimal:
            out["resource"] = result.resource
        out["response"] = response
        return out

    def transaction(self, raw_entries: list, access: Access, *, minimal: bool = False) -> dict:
        """All entries in one database transaction; any failure rolls everything back."""
        entries = [self._parse_entry(i, e) for i, e in enumerate(raw_entries)]
        results: list[Outcome | dict | None] = [None] * len(entries)
        with self.db.write() as conn:
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

    def _plan_post(self, conn: Connection, entry: _Entry) -> None:
        """Resolve If-None-Exist and assign the id of a transaction POST before any write."""
        assert entry.rtype is not None
        self.check_type(entry.rtype)
        if entry.if_none_exist and self.write_rules().conditional_create:
            try:
                entry.existing = self._conditional_match(conn, entry.rtype, entry.if_none_exist)
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
        parsed: list[_Entry | FhirError] = []
        for i, raw in enumerate(raw_entries):
            try:
                parsed.append(self._parse_entry(i, raw))
            except FhirError as err:
                parsed.append(err)
        reads_only = all(isinstance(p, _Entry) and p.method == "GET" for p in parsed)
        if reads_only:
            # One read transaction: the whole chart comes from one consistent snapshot.
            with self.db.read() as conn:
                for entry in parsed:
                    assert isinstance(entry, _Entry)
                    results.append(self._guarded(conn, entry, access))
        else:
            for entry in parsed:
                if isinstance(entry, FhirError):
                    results.append(entry)
                    continue
                opener = self.db.read if entry.method == "GET" else self.db.write
                try:
                    with opener() as conn:
                        results.append(self._run(conn, entry, access, None))
                except FhirError as err:
                    results.append(err)
        return self._response_bundle("batch-response", results, minimal)

    def _guarded(
        self, conn: Connection, entry: _Entry, access: Access
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


def rewrite_references(node: object, refmap: dict[str, str]) -> None:
    """Replace bundle-local references (urn:uuid:..., fullUrls) by Type/id, in place."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in refmap:
            node["reference"] = refmap[ref]
        for value in node.values():
            if isinstance(value, dict | list):
                rewrite_references(value, refmap)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, dict | list):
                rewrite_references(value, refmap)
