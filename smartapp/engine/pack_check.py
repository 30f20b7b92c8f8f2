"""Rule pack validation beyond structure: ``$parameter`` substitution, pydantic errors as
``file:line: field: message`` issues, and cross references (unknown facts and value sets,
fact cycles, duplicate ids and kinds, decline reasons, variant lists)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .pack_model import (
    DECLINE_REASON_ADAPTER,
    EXPRESSION_ADAPTER,
    RULE_ADAPTER,
    WITHHOLD_ADAPTER,
    AllOf,
    AnyOf,
    DeclineReasonSpec,
    Not,
    PackDocument,
    Rule,
)
from .pack_selectors import PARAM_REF, VALUESET_KEYS
from .source import DataPath, Issue, SourceDoc


def validate(
    doc: SourceDoc, known_valuesets: set[str], issues: list[Issue]
) -> tuple[PackDocument | None, set[str]]:
    """Validate a parsed pack: substitution, structure, then cross references."""
    if not isinstance(doc.data, dict):
        issues.append(doc.issue((), "a pack must be a mapping"))
        return None, set()
    origins, unknown = _substitute_parameters(doc, issues)
    document = None
    try:
        document = PackDocument.model_validate(doc.data)
    except ValidationError as exc:
        issues.extend(
            issue
            for issue, path in pydantic_issues(doc, exc, origins=origins)
            if not any(path[: len(u)] == u for u in unknown)
        )
    used = _check_references(doc, known_valuesets, issues)
    return document, used


def _substitute_parameters(
    doc: SourceDoc, issues: list[Issue]
) -> tuple[dict[DataPath, str], list[DataPath]]:
    """Replace ``$name`` strings outside ``parameters`` with the parameter's value.

    Returns where each substitution happened (so errors can name the parameter) and
    where unknown parameters were referenced (already reported).
    """
    params = doc.data.get("parameters") or {}
    if not isinstance(params, dict):
        return {}, []
    origins: dict[DataPath, str] = {}
    unknown: list[DataPath] = []

    def walk(value: Any, path: DataPath) -> Any:
        if isinstance(value, str) and (m := PARAM_REF.match(value)):
            name = m.group(1)
            if name not in params:
                issues.append(doc.issue(path, f"unknown parameter ${name}"))
                unknown.append(path)
                return value
            origins[path] = name
            return copy.deepcopy(params[name])
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    doc.data = {k: (v if k == "parameters" else walk(v, (k,))) for k, v in doc.data.items()}
    used = set(origins.values())
    for name in params:
        if name not in used:
            issues.append(doc.issue(("parameters", name), "parameter is never used"))
    return origins, unknown


def pydantic_issues(
    doc: SourceDoc, exc: ValidationError, origins: Mapping[DataPath, str] | None = None
) -> list[tuple[Issue, DataPath]]:
    """Turn pydantic errors into file:line issues (with the data path of each)."""
    out = []
    for err in exc.errors(include_url=False):
        path = doc.locate(tuple(err["loc"]), missing=err["type"] == "missing")
        message = _message(err)
        for end in range(len(path), 0, -1):
            if origins and path[:end] in origins:
                message += f" (from parameter ${origins[path[:end]]})"
                break
        out.append((doc.issue(path, message), path))
    return out


def _message(err: Any) -> str:
    """A short message for a pydantic error."""
    kind = err["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _try(adapter: TypeAdapter[Any], value: Any) -> Any:
    """Validate quietly; None when invalid (structural errors are reported elsewhere)."""
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _check_references(doc: SourceDoc, known_valuesets: set[str], issues: list[Issue]) -> set[str]:
    """Cross-reference checks on every piece that is structurally valid.

    Unknown facts, fact cycles, unknown value sets, duplicate rule ids and kinds,
    unknown decline reasons and malformed variant lists. Returns value set ids used.
    """
    data = doc.data
    raw_facts = data.get("facts") if isinstance(data.get("facts"), dict) else {}
    pieces: list[tuple[DataPath, Any]] = []
    fact_refs: dict[str, set[str]] = {}
    for name, raw in raw_facts.items():
        expr = _try(EXPRESSION_ADAPTER, raw)
        if expr is not None:
            pieces.append((("facts", name), expr))
            fact_refs[name] = {ref for ref, _ in _fact_refs(expr, ())}
    if "no_suggestions_when" in data:
        expr = _try(EXPRESSION_ADAPTER, data["no_suggestions_when"])
        if expr is not None:
            pieces.append((("no_suggestions_when",), expr))
    raw_all = data.get("withhold_all") if isinstance(data.get("withhold_all"), list) else []
    for j, raw in enumerate(raw_all):
        withhold = _try(WITHHOLD_ADAPTER, raw)
        if withhold is not None:
            pieces.append((("withhold_all", j, "when"), withhold.when))
    raw_rules = data.get("suggestions") if isinstance(data.get("suggestions"), list) else []
    rules = [
        (i, r) for i, raw in enumerate(raw_rules) if (r := _try(RULE_ADAPTER, raw)) is not None
    ]
    for i, rule in rules:
        pieces.extend(_rule_expressions(rule, ("suggestions", i)))
        _check_variants(doc, rule, ("suggestions", i), issues)
    for path, expr in pieces:
        for node, sub in _walk(expr, path):
            if isinstance(node, str) and node not in raw_facts:
                issues.append(doc.issue(sub, f"unknown fact {node!r}"))
    used: set[str] = set()
    for vs_path, vs_id in _valueset_refs(data, ()):
        used.add(vs_id)
        if vs_id not in known_valuesets:
            issues.append(doc.issue(vs_path, f"unknown value set {vs_id!r}"))
    _check_cycles(doc, fact_refs, issues)
    _check_unique(doc, raw_rules, issues)
    _check_decline_codes(doc, rules, issues)
    return used & known_valuesets


def _rule_expressions(rule: Rule, path: DataPath) -> Iterator[tuple[DataPath, Any]]:
    """The expressions of a rule with their paths."""
    yield (*path, "when"), rule.when
    if rule.unless is not None:
        yield (*path, "unless"), rule.unless
    for j, withhold in enumerate(rule.withheld_when):
        yield (*path, "withheld_when", j, "when"), withhold.when
    for j, variant in enumerate(rule.variants or ()):
        if variant.when is not None:
            yield (*path, "variants", j, "when"), variant.when
    for name, expr in rule.cautions.items():
        yield (*path, "cautions", name), expr


def _walk(expr: Any, path: DataPath) -> Iterator[tuple[Any, DataPath]]:
    """Every node of an expression tree with its data path."""
    yield expr, path
    if isinstance(expr, AnyOf | AllOf):
        key = "any_of" if isinstance(expr, AnyOf) else "all_of"
        for i, sub in enumerate(getattr(expr, key)):
            yield from _walk(sub, (*path, key, i))
    elif isinstance(expr, Not):
        yield from _walk(expr.not_, (*path, "not"))


def _fact_refs(expr: Any, path: DataPath) -> Iterator[tuple[str, DataPath]]:
    """Fact names an expression refers to."""
    for node, sub in _walk(expr, path):
        if isinstance(node, str):
            yield node, sub


def _valueset_refs(data: Any, path: DataPath) -> Iterator[tuple[DataPath, str]]:
    """Every value set id named by a ``valueset`` or ``history_codes`` key, from raw data.

    Raw, so an unknown id is reported even where the selector has other errors.
    """
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "parameters" and not path:
                continue
            if key in VALUESET_KEYS:
                ids = [value] if isinstance(value, str) else value
                for i, vs_id in enumerate(ids if isinstance(ids, list) else []):
                    if isinstance(vs_id, str):
                        sub = (*path, key) if isinstance(value, str) else (*path, key, i)
                        yield sub, vs_id
            else:
                yield from _valueset_refs(value, (*path, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            yield from _valueset_refs(item, (*path, i))


def _check_cycles(doc: SourceDoc, refs: Mapping[str, set[str]], issues: list[Issue]) -> None:
    """A fact may not depend on itself."""
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2 or name not in refs:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*trail[trail.index(name) :], name])
            issues.append(doc.issue(("facts", name), f"fact refers to itself: {cycle}"))
            return
        state[name] = 1
        for ref in sorted(refs[name]):
            visit(ref, [*trail, name])
        state[name] = 2

    for name in refs:
        visit(name, [])


def _check_variants(doc: SourceDoc, rule: Rule, path: DataPath, issues: list[Issue]) -> None:
    """Variants: unique names, every one but the last has ``when``, the last has none."""
    variants = rule.variants or ()
    seen: set[str] = set()
    for j, variant in enumerate(variants):
        here = (*path, "variants", j)
        if variant.name in seen:
            issues.append(doc.issue((*here, "name"), f"duplicate variant {variant.name!r}"))
        seen.add(variant.name)
        last = j == len(variants) - 1
        if last and variant.when is not None:
            issues.append(doc.issue((*here, "when"), "the last variant is the default: no when"))
        if not last and variant.when is None:
            issues.append(doc.issue(here, "only the last variant (the default) may omit when"))


def _check_unique(doc: SourceDoc, raw_rules: list[Any], issues: list[Issue]) -> None:
    """Rule ids and suggestion kinds are unique within a pack (checked on raw data)."""
    for attr in ("id", "kind"):
        first: dict[str, int] = {}
        for i, raw in enumerate(raw_rules):
            value = raw.get(attr) if isinstance(raw, dict) else None
            if not isinstance(value, str):
                continue
            if value in first:
                issues.append(
                    doc.issue(
                        ("suggestions", i, attr),
                        f"duplicate {attr} {value!r} (also suggestions[{first[value]}])",
                    )
                )
            first.setdefault(value, i)


def _check_decline_codes(
    doc: SourceDoc, rules: list[tuple[int, Rule]], issues: list[Issue]
) -> None:
    """Decline reason codes are unique, rules only use catalogued ones, and only for the
    kinds a reason applies to (each kind named in `applies_to` is a rule's kind)."""
    raw = doc.data.get("decline_reasons")
    kinds = {rule.kind for _, rule in rules}
    scopes: dict[str, DeclineReasonSpec | None] = {}
    for j, item in enumerate(raw if isinstance(raw, list) else []):
        code = item.get("code") if isinstance(item, dict) else None
        if code in scopes:
            issues.append(
                doc.issue(("decline_reasons", j, "code"), f"duplicate decline reason {code!r}")
            )
        if isinstance(code, str):
            spec = _try(DECLINE_REASON_ADAPTER, item)
            scopes[code] = spec
            for m, kind in enumerate((spec.applies_to or ()) if spec else ()):
                if kind not in kinds:
                    issues.append(
                        doc.issue(
                            ("decline_reasons", j, "applies_to", m),
                            f"unknown suggestion kind {kind!r}",
                        )
                    )
    for i, rule in rules:
        for k, code in enumerate(rule.decline_reasons):
            here = ("suggestions", i, "decline_reasons", k)
            if code not in scopes:
                issues.append(doc.issue(here, f"unknown decline reason {code!r}"))
            elif code in rule.decline_reasons[:k]:
                issues.append(doc.issue(here, f"decline reason {code!r} listed twice"))
            elif (spec := scopes[code]) is not None and not spec.applies(rule.kind):
                issues.append(
                    doc.issue(
                        here,
                        f"decline reason {code!r} does not apply to {rule.kind} "
                        f"(applies_to: {', '.join(spec.applies_to or ())})",
                    )
                )
