"""A search's answer as a searchset Bundle: the resources `_include`/`_revinclude` add, and
the Bundle with its total and paging links."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
from sqlalchemy import Connection, false, select

from smartapp.sandbox.db import resources, search_index
from smartapp.sandbox.fhir.access import Access
from smartapp.sandbox.fhir.results import new_id
from smartapp.sandbox.fhir.search import SearchRequest
from smartapp.sandbox.fhirtime import format_instant


def included_resources(
    conn: Connection, request: SearchRequest, matches: list[dict], access: Access
) -> list[dict]:
    """The resources `_include` and `_revinclude` ask for beside the matches, each once and
    only those the caller may read."""
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


def searchset(
    request: SearchRequest,
    total: int,
    matches: list[dict],
    included: list[dict],
    path: str,
    full_url: Callable[[str, str], str],
) -> dict:
    """The searchset Bundle: the page's matches and includes, the total and paging links
    (`path`: the search's URL without its query)."""

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
            "fullUrl": full_url(m["resourceType"], m["id"]),
            "resource": m,
            "search": {"mode": "match"},
        }
        for m in matches
    ] + [
        {
            "fullUrl": full_url(i["resourceType"], i["id"]),
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
