"""Search: parse FHIR search parameters and turn them into SQL over the index table.

Each criterion becomes `resource.id IN (SELECT res_id FROM index WHERE type, param, match)`,
so the database answers from the index instead of reading every resource. The same parsed
predicates also test a resource in memory (used for SMART scopes with a `?query` suffix on
writes, where the resource is not stored yet).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select, true

from smartapp.sandbox.db import resources, search_index
from smartapp.sandbox.fhir.errors import FhirError
from smartapp.sandbox.fhir.indexing import index_rows, normalize_string, split_reference
from smartapp.sandbox.fhir.params import (
    COLUMN_PARAMS,
    PARAMS_BY_NAME,
    IndexRow,
    param_for,
    params_for_type,
)
from smartapp.sandbox.fhir.resource_types import R4_RESOURCE_TYPES
from smartapp.sandbox.fhirtime import parse_range

DEFAULT_COUNT = 50
MAX_COUNT = 1000
#: Marks a next link whose paging session has expired (the `expire_next_pages` fault): the
#: page answers 410 Gone, as an EHR does once it has let a search's results go.
EXPIRED_PAGE_PARAM = "_sandbox-page-expired"

#: Result-shaping parameters (not criteria).
CONTROL_PARAMS = frozenset(
    {
        "_count",
        "_offset",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_total",
        "_format",
        "_pretty",
        "_elements",
    }
)
_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_MODIFIERS = {
    "token": {"not", "missing"},
    "reference": {"missing"},
    "date": {"missing"},
    "string": {"exact", "contains", "missing"},
    "uri": {"missing"},
}


@dataclass(frozen=True)
class Predicate:
    """One comma-separated alternative of a criterion, testable in SQL and in memory."""

    kind: str
    value: str | None = None
    system: str | None = None
    system_mode: str = "any"  # any | none | equals
    match: str = "eq"  # eq | prefix | contains (strings)
    prefix: str = "eq"  # date comparator
    lo: int = 0
    hi: int = 0

    def sql(self) -> ColumnElement[bool]:
        """Condition on the index table's columns."""
        c = search_index.c
        if self.kind == "date":
            return _date_cmp(self.prefix, c.lo, c.hi, self.lo, self.hi)
        if self.kind == "string" and self.match != "eq":
            pattern = _like_escape(self.value or "")
            pattern = f"%{pattern}%" if self.match == "contains" else f"{pattern}%"
            return c.value.like(pattern, escape="\\")
        parts: list[ColumnElement[bool]] = []
        if self.value is not None:
            parts.append(c.value == self.value)
        if self.system_mode == "equals":
            parts.append(c.system == self.system)
        elif self.system_mode == "none":
            parts.append(c.system.is_(None))
        return and_(*parts) if parts else true()

    def test(self, row: IndexRow) -> bool:
        """Does an index row (of the right parameter) satisfy this predicate?"""
        _, system, value, lo, hi = row
        if self.kind == "date":
            return lo is not None and hi is not None and _date_test(self.prefix, lo, hi, self)
        if self.kind == "string" and self.match != "eq":
            needle = self.value or ""
            if value is None:
                return False
            return needle in value if self.match == "contains" else value.startswith(needle)
        if self.value is not None and value != self.value:
            return False
        if self.system_mode == "equals":
            return system == self.system
        if self.system_mode == "none":
            return system is None
        return True


@dataclass(frozen=True)
class Criterion:
    """One search parameter occurrence: name, modifier and its OR-ed predicates."""

    name: str
    modifier: str | None
    predicates: tuple[Predicate, ...]
    raw: str


@dataclass
class SearchRequest:
    """A parsed search on one resource type."""

    rtype: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort: list[tuple[str, bool]] = field(default_factory=list)
    include: list[tuple[str, str, str | None]] = field(default_factory=list)
    revinclude: list[tuple[str, str, str | None]] = field(default_factory=list)
    summary_count: bool = False

    def link_pairs(self, offset: int | None = None) -> list[tuple[str, str]]:
        """The query of this search as (name, value) pairs, for self/next/previous links."""
        pairs = [(c.name + (f":{c.modifier}" if c.modifier else ""), c.raw) for c in self.criteria]
        pairs += [("_include", ":".join(x for x in inc if x)) for inc in self.include]
        pairs += [("_revinclude", ":".join(x for x in inc if x)) for inc in self.revinclude]
        if self.sort:
            pairs.append(("_sort", ",".join(("-" if d else "") + n for n, d in self.sort)))
        if self.summary_count:
            pairs.append(("_summary", "count"))
        pairs.append(("_count", str(self.count)))
        start = self.offset if offset is None else offset
        if start:
            pairs.append(("_offset", str(start)))
        return pairs


def split_commas(value: str) -> list[str]:
    """Split on unescaped commas; `\\,` stays a literal comma."""
    parts = re.split(r"(?<!\\),", value)
    return [p.replace("\\,", ",") for p in parts]


def parse_search(
    rtype: str,
    pairs: Iterable[tuple[str, str]],
    local_base: str,
    *,
    strict: bool = True,
) -> SearchRequest:
    """Parse query pairs into a SearchRequest; unknown parameters are 400 when `strict`."""
    request = SearchRequest(rtype=rtype)
    for key, value in pairs:
        name, _, modifier = key.partition(":")
        if name == "_count":
            request.count = _int_param(key, value, 0, MAX_COUNT)
        elif name == "_offset":
            request.offset = _int_param(key, value, 0, 10**9)
        elif name == "_sort":
            request.sort.extend(_parse_sort(rtype, value))
        elif name in ("_include", "_revinclude"):
            target = request.include if name == "_include" else request.revinclude
            target.append(_parse_include(key, value))
        elif name == "_summary":
            if value == "count":
                request.summary_count = True
            elif value not in ("false",) and strict:
                raise FhirError(400, f"_summary={value} is not supported (only count)")
        elif name in CONTROL_PARAMS:
            continue
        elif name == EXPIRED_PAGE_PARAM:
            raise FhirError(410, "This page of search results has expired; search again")
        else:
            criterion = _parse_criterion(rtype, name, modifier or None, value, local_base, strict)
            if criterion is not None:
                request.criteria.append(criterion)
    return request


def _int_param(key: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise FhirError(400, f"{key} must be an integer, got '{value}'") from None
    return max(low, min(high, number))


def _parse_sort(rtype: str, value: str) -> list[tuple[str, bool]]:
    out = []
    for item in split_commas(value):
        name = item.lstrip("-")
        if name not in COLUMN_PARAMS and param_for(rtype, name) is None:
            raise FhirError(400, f"Cannot sort {rtype} by unknown parameter '{name}'")
        out.append((name, item.startswith("-")))
    return out


def _parse_include(key: str, value: str) -> tuple[str, str, str | None]:
    parts = value.split(":")
    if len(parts) not in (2, 3) or parts[0] not in R4_RESOURCE_TYPES:
        raise FhirError(400, f"{key}={value}: expected Type:param[:TargetType]")
    param = param_for(parts[0], parts[1])
    if param is None or param.kind != "reference":
        raise FhirError(400, f"{key}={value}: '{parts[1]}' is not a reference parameter")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _unsupported(rtype: str, name: str) -> FhirError:
    known = sorted({p.name for p in params_for_type(rtype)} | set(COLUMN_PARAMS))
    return FhirError(
        400,
        f"Unknown search parameter '{name}' for {rtype}. Supported: {', '.join(known)}",
        "not-supported",
    )


def _parse_criterion(
    rtype: str,
    name: str,
    modifier: str | None,
    value: str,
    local_base: str,
    strict: bool,
) -> Criterion | None:
    if "." in name:
        if strict:
            raise FhirError(400, f"Chained search '{name}' is not supported", "not-supported")
        return None
    if name in COLUMN_PARAMS:
        kind = COLUMN_PARAMS[name]
        if modifier:
            raise FhirError(400, f"Modifier :{modifier} is not supported on {name}")
    else:
        param = param_for(rtype, name)
        if param is None:
            if strict:
                raise _unsupported(rtype, name)
            return None
        kind = param.kind
        if (
            modifier
            and modifier not in _MODIFIERS[kind]
            and not (kind == "reference" and modifier in R4_RESOURCE_TYPES)
        ):
            raise FhirError(400, f"Modifier :{modifier} is not supported on {name}")
    if modifier == "missing":
        if value not in ("true", "false"):
            raise FhirError(400, f"{name}:missing must be true or false")
        return Criterion(name, modifier, (), value)
    predicates = tuple(
        _predicate(kind, name, modifier, part, local_base) for part in split_commas(value)
    )
    return Criterion(name, modifier, predicates, value)


def _predicate(
    kind: str, name: str, modifier: str | None, value: str, local_base: str
) -> Predicate:
    if kind == "token":
        system, bar, code = _split_pipe(value)
        if not bar:
            return Predicate("token", value=value)
        if system == "":
            return Predicate("token", value=code or None, system_mode="none")
        return Predicate("token", value=code or None, system=system, system_mode="equals")
    if kind == "reference":
        target, ident = split_reference(value, local_base)
        if target is None and "/" not in value:
            ident = value
        param = PARAMS_BY_NAME.get(name)
        if modifier and modifier in R4_RESOURCE_TYPES:
            target = modifier
        elif target is None and param is not None and len(param.targets) == 1:
            target = param.targets[0]
        if target is None:
            return Predicate("reference", value=ident)
        return Predicate("reference", value=ident, system=target, system_mode="equals")
    if kind == "date":
        prefix = value[:2] if value[:2] in _DATE_PREFIXES else "eq"
        text = value[2:] if value[:2] in _DATE_PREFIXES else value
        rng = parse_range(text)
        if rng is None:
            raise FhirError(400, f"Invalid date '{value}' for parameter {name}")
        return Predicate("date", prefix=prefix, lo=rng[0], hi=rng[1])
    if kind == "string":
        match = {"exact": "eq", "contains": "contains"}.get(modifier or "", "prefix")
        return Predicate("string", value=normalize_string(value), match=match)
    return Predicate("uri", value=value)


def _split_pipe(value: str) -> tuple[str, bool, str]:
    match = re.search(r"(?<!\\)\|", value)
    if not match:
        return value, False, ""
    return value[: match.start()], True, value[match.end() :].replace("\\|", "|")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _date_cmp(
    prefix: str, lo: ColumnElement, hi: ColumnElement, plo: int, phi: int
) -> ColumnElement[bool]:
    equal = and_(lo >= plo, hi <= phi)
    return {
        "eq": equal,
        "ne": not_(equal),
        "gt": hi > phi,
        "lt": lo < plo,
        "ge": hi >= plo,
        "le": lo <= phi,
        "sa": lo > phi,
        "eb": hi < plo,
        "ap": and_(lo <= phi, hi >= plo),
    }[prefix]


def _date_test(prefix: str, lo: int, hi: int, p: Predicate) -> bool:
    equal = lo >= p.lo and hi <= p.hi
    return {
        "eq": equal,
        "ne": not equal,
        "gt": hi > p.hi,
        "lt": lo < p.lo,
        "ge": hi >= p.lo,
        "le": lo <= p.hi,
        "sa": lo > p.hi,
        "eb": hi < p.lo,
        "ap": lo <= p.hi and hi >= p.lo,
    }[prefix]


# -- SQL -------------------------------------------------------------------------------------


def criteria_sql(rtype: str, criteria: Sequence[Criterion]) -> list[ColumnElement[bool]]:
    """WHERE conditions on the resources table for the criteria (AND-ed by the caller)."""
    r = resources.c
    conditions: list[ColumnElement[bool]] = []
    for crit in criteria:
        if crit.name == "_id":
            conditions.append(r.id.in_([p.value for p in crit.predicates]))
            continue
        if crit.name == "_lastUpdated":
            conditions.append(
                or_(
                    *(
                        _date_cmp(p.prefix, r.last_updated, r.last_updated, p.lo, p.hi)
                        for p in crit.predicates
                    )
                )
            )
            continue
        base = select(search_index.c.res_id).where(
            search_index.c.res_type == rtype, search_index.c.param == crit.name
        )
        if crit.modifier == "missing":
            present = r.id.in_(base)
            conditions.append(not_(present) if crit.raw == "true" else present)
            continue
        matched = r.id.in_(base.where(or_(*(p.sql() for p in crit.predicates))))
        conditions.append(not_(matched) if crit.modifier == "not" else matched)
    return conditions


def sort_sql(rtype: str, sort: Sequence[tuple[str, bool]]) -> list[ColumnElement[Any]]:
    """ORDER BY clauses; ties and the default order use lastUpdated then id."""
    r = resources.c
    clauses: list[ColumnElement[Any]] = []
    for name, descending in sort:
        col: ColumnElement[Any]
        if name == "_id":
            col = r.id
        elif name == "_lastUpdated":
            col = r.last_updated
        else:
            param = param_for(rtype, name)
            column = search_index.c.lo if param and param.kind == "date" else search_index.c.value
            col = (
                select(func.min(column))
                .where(
                    search_index.c.res_type == rtype,
                    search_index.c.res_id == r.id,
                    search_index.c.param == name,
                )
                .scalar_subquery()
            )
        clauses.append(col.desc() if descending else col.asc())
    clauses += [r.last_updated, r.id]
    return clauses


# -- in memory -------------------------------------------------------------------------------


def matches(rtype: str, resource: dict, criteria: Sequence[Criterion], local_base: str) -> bool:
    """Does an (unsaved) resource satisfy every criterion?"""
    rows = index_rows(rtype, resource, local_base)
    for crit in criteria:
        if crit.name == "_id":
            ok = resource.get("id") in {p.value for p in crit.predicates}
        elif crit.name == "_lastUpdated":
            rng = parse_range(str((resource.get("meta") or {}).get("lastUpdated", "")))
            ok = rng is not None and any(
                _date_test(p.prefix, rng[0], rng[1], p) for p in crit.predicates
            )
        else:
            mine = [row for row in rows if row[0] == crit.name]
            if crit.modifier == "missing":
                ok = (not mine) == (crit.raw == "true")
            else:
                hit = any(p.test(row) for row in mine for p in crit.predicates)
                ok = not hit if crit.modifier == "not" else hit
        if not ok:
            return False
    return True


def never() -> ColumnElement[bool]:
    """A condition no row satisfies."""
    return false()
