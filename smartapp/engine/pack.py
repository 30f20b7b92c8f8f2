"""Rule packs: the YAML format (pydantic models), loading, validation and JSON Schema.

A pack is data owned by informatics: parameters, named facts built from a few
primitive selectors, and suggestions. The format is documented in ``rules/README.md``.
Loading reports every problem at once, each as ``file:line: field: message``.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from . import location
from .source import DataPath, Issue, SourceDoc, SourceError, read_source
from .valueset import VALUESET_ID, ValueSet, ValueSetFile

NAME = r"^[a-z][a-z0-9_]*$"
SLUG = r"^[a-z0-9][a-z0-9-]*$"
#: Status code that matches a resource without that status element.
ABSENT = "absent"
#: Reason (and notice) of a version 1 pack's ``no_suggestions_when``.
NO_SUGGESTIONS = "no-suggestions"
#: Keys whose values name value sets (one id or a list).
VALUESET_KEYS = frozenset({"valueset", "history_codes"})
_PARAM_REF = re.compile(r"^\$([a-z][a-z0-9_]*)$")
_DURATION = re.compile(r"^\s*(\d+)\s*(m|h|d)\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


# ---------------------------------------------------------------------------------------
# small types


def _parse_duration(value: Any) -> Any:
    """``12h``, ``30m``, ``365d`` -> timedelta (other values left to pydantic)."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m or int(m.group(1)) == 0:
            raise ValueError("expected a positive duration such as 30m, 12h or 365d")
        return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    if isinstance(value, timedelta):
        return value
    raise ValueError("expected a duration such as 30m, 12h or 365d")


Duration = Annotated[
    timedelta,
    BeforeValidator(_parse_duration),
    WithJsonSchema({"type": "string", "pattern": _DURATION.pattern}),
]
FactName = Annotated[str, Field(pattern=NAME)]
Slug = Annotated[str, Field(pattern=SLUG)]
ValueSetIds = Annotated[
    tuple[Annotated[str, Field(pattern=VALUESET_ID)], ...],
    BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": VALUESET_ID},
                {
                    "type": "array",
                    "items": {"type": "string", "pattern": VALUESET_ID},
                    "minItems": 1,
                },
            ]
        }
    ),
]
MedicationType = Literal[
    "MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense"
]


class Model(BaseModel):
    """Base of every pack model: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StatusNot(Model):
    """A status filter that accepts every status except these."""

    not_: tuple[str, ...] = Field(alias="not", min_length=1)


def _status_tag(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        return "any_of"
    return "not" if isinstance(value, dict | StatusNot) else None


StatusFilter = Annotated[
    Annotated[tuple[str, ...], Tag("any_of"), Field(min_length=1)]
    | Annotated[StatusNot, Tag("not")],
    Discriminator(
        _status_tag,
        custom_error_type="status_filter",
        custom_error_message="expected a list of status codes or {not: [codes]}",
    ),
]


def status_allows(rule: tuple[str, ...] | StatusNot, status: str | None) -> bool:
    """Whether a status filter accepts a status (None, a missing status, is ``absent``)."""
    code = ABSENT if status is None else status
    if isinstance(rule, StatusNot):
        return code not in rule.not_
    return code in rule


class Coding(Model):
    """A (system, code) pair."""

    system: str = Field(min_length=1)
    code: str = Field(min_length=1)


class PositiveResult(Model):
    """What makes a lab result positive: any one of these."""

    value_codes: tuple[Coding, ...] = ()
    interpretations: tuple[Coding, ...] = ()
    value_strings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# selectors (primitive facts)


class _Timed(Model):
    """Time filters shared by selectors: this visit, not this visit, a look-back window."""

    this_visit: bool = False
    not_this_visit: bool = False
    within: Duration | None = None

    @model_validator(mode="after")
    def _one_visit_filter(self) -> _Timed:
        if self.this_visit and self.not_this_visit:
            raise ValueError("this_visit and not_this_visit exclude each other")
        if getattr(self, "prehospital", None) is not None and not self.this_visit:
            raise ValueError("prehospital widens this_visit: it needs this_visit: true")
        return self


class ConditionSelector(_Timed):
    """Conditions coded in a value set, filtered by clinical and verification status.

    The current encounter's ``reasonCode`` codes count as active conditions this visit
    (``current_encounter.reason_codes``); ``earlier_encounter_reasons`` adds the
    ``reasonCode`` of every other encounter, at its start (recent overdose).
    ``history_codes``: codes in these value sets are never *this visit* (a T40 code of a
    subsequent encounter or sequela is history even when recorded today). Without
    ``clinical_status`` any clinical status passes (an overdose is an event).
    """

    valueset: ValueSetIds
    clinical_status: StatusFilter | None = None
    verification_status: StatusFilter
    history_codes: ValueSetIds | None = None
    earlier_encounter_reasons: bool = False


class ObservationSelector(_Timed):
    """Observations coded in a value set with an accepted status, optionally positive."""

    valueset: ValueSetIds
    status: StatusFilter
    positive: PositiveResult | None = None


class LatestObservationSelector(_Timed):
    """The newest numeric observation in the window has a value at or above a threshold."""

    valueset: ValueSetIds
    status: StatusFilter
    within: Duration
    at_least: float


class MedicationSelector(_Timed):
    """Medication resources of the listed types whose status that type's filter accepts.

    ``intent`` filters MedicationRequests by intent (drafts: ``proposal``, ``plan``).
    ``prehospital``: with ``this_visit``, a resource with no encounter reference timed in
    ``[start - prehospital, start]`` also counts (naloxone given by EMS before arrival).
    ``supply_covers_now``: only resources whose supply still covers *now*: clinical time at
    or before *now*, and that time plus its supply (``daysSupply``,
    ``expectedSupplyDuration``; else this default) at or after *now*.
    ``supply_ended_within``: the end of its supply or effective period (else its clinical
    time) is at or after ``now - window`` (a supply that has not run out counts).
    """

    valueset: ValueSetIds
    status: dict[MedicationType, StatusFilter] = Field(min_length=1)
    intent: StatusFilter | None = None
    prehospital: Duration | None = None
    supply_covers_now: Duration | None = None
    supply_ended_within: Duration | None = None


class AllergySelector(Model):
    """AllergyIntolerance coded in a value set, by clinical and verification status."""

    valueset: ValueSetIds
    clinical_status: StatusFilter
    verification_status: StatusFilter


class ServiceRequestSelector(_Timed):
    """ServiceRequests coded in a value set with an accepted status."""

    valueset: ValueSetIds
    status: StatusFilter


# ---------------------------------------------------------------------------------------
# expressions: a fact name or a one-key mapping


class AnyOf(Model):
    """True when any branch is; evidence of every true branch."""

    any_of: tuple[Expression, ...] = Field(min_length=1)


class AllOf(Model):
    """True when every branch is; evidence of all branches."""

    all_of: tuple[Expression, ...] = Field(min_length=1)


class Not(Model):
    """True when the inner expression is false; carries no evidence."""

    not_: Expression = Field(alias="not")


class ConditionExpr(Model):
    condition: ConditionSelector


class ObservationExpr(Model):
    observation: ObservationSelector


class LatestObservationExpr(Model):
    latest_observation_value_at_least: LatestObservationSelector


class MedicationExpr(Model):
    medication: MedicationSelector


class AllergyExpr(Model):
    allergy: AllergySelector


class ServiceRequestExpr(Model):
    service_request: ServiceRequestSelector


class AgeAtLeast(Model):
    """The patient's age in whole years at *now* is at least this (unknown age: false)."""

    age_at_least: int = Field(ge=0, le=150)


class AgeUnder(Model):
    """Younger than this in whole years at *now*, or of unknown age (it cannot be confirmed);
    evidence: the Patient. The withheld reason ``under-age`` uses it."""

    age_under: int = Field(ge=0, le=150)


class PatientDeceased(Model):
    """The patient has deceasedBoolean true or any deceasedDateTime (evidence: the Patient)."""

    patient_deceased: Literal[True]


class ChartIncomplete(Model):
    """The caller could not read all of these resource types (scope, refusal, paging...)."""

    chart_incomplete: tuple[Annotated[str, Field(pattern=r"^[A-Z][A-Za-z]+$")], ...] = Field(
        min_length=1
    )


EXPRESSION_MODELS: dict[str, type[Model]] = {
    "any_of": AnyOf,
    "all_of": AllOf,
    "not": Not,
    "condition": ConditionExpr,
    "observation": ObservationExpr,
    "latest_observation_value_at_least": LatestObservationExpr,
    "medication": MedicationExpr,
    "allergy": AllergyExpr,
    "service_request": ServiceRequestExpr,
    "age_at_least": AgeAtLeast,
    "age_under": AgeUnder,
    "patient_deceased": PatientDeceased,
    "chart_incomplete": ChartIncomplete,
}
_MODEL_TAGS = {model: tag for tag, model in EXPRESSION_MODELS.items()}


def _expression_tag(value: Any) -> str | None:
    """Which expression form a value is: ``ref`` for a fact name, else its single key."""
    if isinstance(value, str):
        return "ref"
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return key if key in EXPRESSION_MODELS else None
    return _MODEL_TAGS.get(type(value))


Expression = Annotated[
    Annotated[FactName, Tag("ref")]
    | Annotated[AnyOf, Tag("any_of")]
    | Annotated[AllOf, Tag("all_of")]
    | Annotated[Not, Tag("not")]
    | Annotated[ConditionExpr, Tag("condition")]
    | Annotated[ObservationExpr, Tag("observation")]
    | Annotated[LatestObservationExpr, Tag("latest_observation_value_at_least")]
    | Annotated[MedicationExpr, Tag("medication")]
    | Annotated[AllergyExpr, Tag("allergy")]
    | Annotated[ServiceRequestExpr, Tag("service_request")]
    | Annotated[AgeAtLeast, Tag("age_at_least")]
    | Annotated[AgeUnder, Tag("age_under")]
    | Annotated[PatientDeceased, Tag("patient_deceased")]
    | Annotated[ChartIncomplete, Tag("chart_incomplete")],
    Discriminator(
        _expression_tag,
        custom_error_type="expression",
        custom_error_message=(
            "expected a fact name or a mapping with exactly one of: " + ", ".join(EXPRESSION_MODELS)
        ),
    ),
]
for _model in (AnyOf, AllOf, Not):
    _model.model_rebuild()


# ---------------------------------------------------------------------------------------
# suggestions and the pack document


class Variant(Model):
    """A variant of a suggestion; the last one, without ``when``, is the default."""

    name: Slug
    when: Expression | None = None


class DeclineReasonSpec(Model):
    """A reason the physician can give for declining a suggestion."""

    code: Slug
    label: str = Field(min_length=1)
    free_text: bool = False
    # The suggestion kinds it may be offered for ("coach unavailable": the coach consult
    # only); None: any kind.
    applies_to: tuple[Slug, ...] | None = Field(default=None, min_length=1)

    def applies(self, kind: str) -> bool:
        """Whether this reason may be offered for a suggestion of `kind`."""
        return self.applies_to is None or kind in self.applies_to


class Withhold(Model):
    """A reason that withholds a suggestion whose trigger holds; reported, never silent."""

    reason: Slug
    when: Expression


class Rule(Model):
    """One suggestion rule: when it fires, what it suggests, and what withholds it.

    ``withheld_when`` lists the reasons in the order they are reported; ``unless`` (the
    version 1 form) is a single reason reported as ``excluded``.
    """

    id: Slug
    kind: Slug
    title: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    when: Expression
    unless: Expression | None = None
    withheld_when: tuple[Withhold, ...] = ()
    variants: tuple[Variant, ...] | None = Field(default=None, min_length=1)
    cautions: dict[Slug, Expression] = Field(default_factory=dict)
    decline_reasons: tuple[Slug, ...] = Field(min_length=1)


class CurrentEncounter(Model):
    """How to pick the current encounter when the launch gives none, and what it counts.

    ``class`` and ``status`` also decide the ``not-current-ed-visit`` notice for a launch
    encounter. ``reason_codes``: its ``reasonCode`` codes count as active conditions this
    visit; ``diagnoses``: the Conditions its ``diagnosis`` references are this visit;
    ``condition_history``: a Condition timed more than this before its start is never this
    visit, whatever it references.
    """

    class_: Coding = Field(alias="class")
    status: tuple[str, ...] = Field(min_length=1)
    reason_codes: bool = False
    diagnoses: bool = False
    condition_history: Duration | None = None


class PackDocument(Model):
    """A rule pack file as written (after ``$parameter`` references are substituted)."""

    id: Slug
    version: str = Field(min_length=1)
    title: str | None = None
    description: str | None = None
    parameters: dict[Annotated[str, Field(pattern=NAME)], Any] = Field(default_factory=dict)
    current_encounter: CurrentEncounter
    withhold_all: tuple[Withhold, ...] = ()
    # version 1 form of withhold_all: when true, every triggered kind is withheld with the
    # reason (and notice) `no-suggestions`
    no_suggestions_when: Expression | None = None

    def withholds_all(self) -> tuple[Withhold, ...]:
        """``withhold_all``, then a version 1 ``no_suggestions_when`` as ``no-suggestions``."""
        if self.no_suggestions_when is None:
            return self.withhold_all
        return (*self.withhold_all, Withhold(reason=NO_SUGGESTIONS, when=self.no_suggestions_when))

    decline_reasons: tuple[DeclineReasonSpec, ...] = Field(min_length=1)
    facts: dict[FactName, Expression] = Field(default_factory=dict)
    suggestions: tuple[Rule, ...] = Field(min_length=1)


_EXPRESSION = TypeAdapter(Expression)
_RULE = TypeAdapter(Rule)
_WITHHOLD = TypeAdapter(Withhold)
_DECLINE_REASON = TypeAdapter(DeclineReasonSpec)


# ---------------------------------------------------------------------------------------
# the loaded pack


class PackError(Exception):
    """A pack or its value sets are invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = sorted(set(issues))
        super().__init__("\n".join(str(i) for i in self.issues))


@dataclass(frozen=True)
class Pack:
    """A validated rule pack with its compiled value sets and content hash."""

    document: PackDocument
    valuesets: Mapping[str, ValueSet]
    content_hash: str
    path: Path | None = None

    @property
    def id(self) -> str:
        """The pack's id."""
        return self.document.id

    @property
    def version(self) -> str:
        """The pack's version."""
        return self.document.version

    @property
    def facts(self) -> Mapping[str, Any]:
        """Named facts (expressions)."""
        return self.document.facts

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Suggestion rules, in pack order."""
        return self.document.suggestions

    @property
    def decline_reasons(self) -> dict[str, DeclineReasonSpec]:
        """The decline reason catalogue by code."""
        return {d.code: d for d in self.document.decline_reasons}


def rules_dir() -> Path:
    """The rules directory: ``$HANDOFF_RULES_DIR``, else the rules Handoff ships (the
    checkout's ``rules/``, or their copy in an installed wheel: ``engine.location``)."""
    return location.rules_dir()


def default_pack_path() -> Path:
    """Path of the default pack, ``<rules dir>/packs/default.yaml``."""
    return rules_dir() / "packs" / "default.yaml"


def valuesets_dir_for(pack_path: Path) -> Path:
    """Value sets of a pack at ``<rules>/packs/x.yaml`` live in ``<rules>/valuesets``."""
    return pack_path.resolve().parent.parent / "valuesets"


def load_pack(path: str | Path | None = None, valuesets_dir: str | Path | None = None) -> Pack:
    """Load and validate a pack and its value sets; raise PackError listing every issue."""
    pack_path = Path(path) if path is not None else default_pack_path()
    vs_dir = Path(valuesets_dir) if valuesets_dir is not None else valuesets_dir_for(pack_path)
    library = _load_valuesets(vs_dir)
    try:
        doc, raw = read_source(pack_path)
    except SourceError as exc:
        raise PackError([exc.issue, *library.issues]) from None
    issues = list(library.issues)
    document, used_valuesets = _validate(doc, set(library.known), issues)
    if issues or document is None:
        raise PackError(issues)
    return Pack(
        document=document,
        valuesets={k: library.valuesets[k] for k in sorted(used_valuesets)},
        content_hash=_content_hash(raw, {k: library.raw[k] for k in used_valuesets}),
        path=pack_path,
    )


def _content_hash(pack_bytes: bytes, valueset_bytes: Mapping[str, bytes]) -> str:
    """sha256 over the pack file and the value set files it uses (in id order)."""
    digest = hashlib.sha256()
    parts = [("pack", pack_bytes)] + [
        (f"valueset/{k}", valueset_bytes[k]) for k in sorted(valueset_bytes)
    ]
    for name, data in parts:
        digest.update(f"{name}:{len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# value set library


@dataclass
class _Library:
    valuesets: dict[str, ValueSet] = field(default_factory=dict)
    raw: dict[str, bytes] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)
    issues: list[Issue] = field(default_factory=list)


def _load_valuesets(directory: Path) -> _Library:
    """Load every ``*.json`` ValueSet of a directory, collecting issues."""
    lib = _Library()
    if not directory.is_dir():
        lib.issues.append(Issue(str(directory), 1, "(directory)", "value set directory not found"))
        return lib
    for path in sorted(directory.glob("*.json")):
        lib.known.add(path.stem)
        try:
            doc, raw = read_source(path)
        except SourceError as exc:
            lib.issues.append(exc.issue)
            continue
        try:
            source = ValueSetFile.model_validate(doc.data)
        except ValidationError as exc:
            lib.issues.extend(issue for issue, _path in _pydantic_issues(doc, exc))
            continue
        if source.id != path.stem:
            lib.issues.append(doc.issue(("id",), f"id {source.id!r} must match the file name"))
            continue
        lib.valuesets[source.id] = ValueSet.compile(source)
        lib.raw[source.id] = raw
    return lib


# ---------------------------------------------------------------------------------------
# validation


def _validate(
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
            for issue, path in _pydantic_issues(doc, exc, origins=origins)
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
        if isinstance(value, str) and (m := _PARAM_REF.match(value)):
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


def _pydantic_issues(
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
        expr = _try(_EXPRESSION, raw)
        if expr is not None:
            pieces.append((("facts", name), expr))
            fact_refs[name] = {ref for ref, _ in _fact_refs(expr, ())}
    if "no_suggestions_when" in data:
        expr = _try(_EXPRESSION, data["no_suggestions_when"])
        if expr is not None:
            pieces.append((("no_suggestions_when",), expr))
    raw_all = data.get("withhold_all") if isinstance(data.get("withhold_all"), list) else []
    for j, raw in enumerate(raw_all):
        withhold = _try(_WITHHOLD, raw)
        if withhold is not None:
            pieces.append((("withhold_all", j, "when"), withhold.when))
    raw_rules = data.get("suggestions") if isinstance(data.get("suggestions"), list) else []
    rules = [(i, r) for i, raw in enumerate(raw_rules) if (r := _try(_RULE, raw)) is not None]
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
            spec = _try(_DECLINE_REASON, item)
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


# ---------------------------------------------------------------------------------------
# JSON Schema


def pack_json_schema() -> dict[str, Any]:
    """JSON Schema of the pack file format (``rules/schema/pack.schema.json``).

    Generated from the models; every value outside ``parameters`` may also be a
    ``$parameter`` reference, which the schema allows.
    """
    schema = PackDocument.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    defs["ParameterReference"] = {
        "type": "string",
        "pattern": _PARAM_REF.pattern,
        "description": "A reference to a value in the pack's parameters.",
    }
    _allow_references(schema, skip=("parameters",))
    for definition in defs.values():
        _allow_references(definition)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "urn:handoff:rules:pack.schema.json"
    return schema


def _allow_references(schema: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Let each property (and list item, map value) also be a parameter reference."""
    ref = {"$ref": "#/$defs/ParameterReference"}
    for name, prop in (schema.get("properties") or {}).items():
        if name not in skip:
            schema["properties"][name] = {"anyOf": [_with_items(prop), ref]}


def _with_items(prop: dict[str, Any]) -> dict[str, Any]:
    """Allow parameter references inside array items and map values too."""
    ref = {"$ref": "#/$defs/ParameterReference"}
    for key in ("items", "additionalProperties"):
        if isinstance(prop.get(key), dict) and prop[key]:
            prop[key] = {"anyOf": [prop[key], ref]}
    for option in prop.get("anyOf", []):
        _with_items(option)
    return prop
