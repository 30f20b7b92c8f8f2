"""Rule packs: loading and validation (the loaded ``Pack``), with the pack format's models
re-exported from where they live.

A pack is data owned by informatics: parameters, named facts built from a few
primitive selectors, and suggestions. The format is documented in ``rules/README.md``.
Loading reports every problem at once, each as ``file:line: field: message``.

- ``pack_selectors``: constants, small types and the primitive selectors;
- ``pack_model``: expressions, suggestion rules and the pack document;
- ``pack_check``: parameter substitution and cross-reference checks;
- ``pack_schema``: the JSON Schema of the format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import location
from .pack_check import pydantic_issues, validate
from .pack_model import (
    EXPRESSION_MODELS,
    AgeAtLeast,
    AgeUnder,
    AllergyExpr,
    AllOf,
    AnyOf,
    ChartIncomplete,
    ConditionExpr,
    CurrentEncounter,
    DeclineReasonSpec,
    Expression,
    LatestObservationExpr,
    MedicationExpr,
    Not,
    ObservationExpr,
    PackDocument,
    PatientDeceased,
    Rule,
    ServiceRequestExpr,
    Variant,
    Withhold,
)
from .pack_schema import pack_json_schema
from .pack_selectors import (
    ABSENT,
    NAME,
    NO_SUGGESTIONS,
    SLUG,
    VALUESET_KEYS,
    AllergySelector,
    Coding,
    ConditionSelector,
    Duration,
    LatestObservationSelector,
    MedicationSelector,
    Model,
    ObservationSelector,
    PositiveResult,
    ServiceRequestSelector,
    StatusNot,
    status_allows,
)
from .source import Issue, SourceError, read_source
from .valueset import ValueSet, ValueSetFile

__all__ = [
    "ABSENT",
    "EXPRESSION_MODELS",
    "NAME",
    "NO_SUGGESTIONS",
    "SLUG",
    "VALUESET_KEYS",
    "AgeAtLeast",
    "AgeUnder",
    "AllOf",
    "AllergyExpr",
    "AllergySelector",
    "AnyOf",
    "ChartIncomplete",
    "Coding",
    "ConditionExpr",
    "ConditionSelector",
    "CurrentEncounter",
    "DeclineReasonSpec",
    "Duration",
    "Expression",
    "LatestObservationExpr",
    "LatestObservationSelector",
    "MedicationExpr",
    "MedicationSelector",
    "Model",
    "Not",
    "ObservationExpr",
    "ObservationSelector",
    "Pack",
    "PackDocument",
    "PackError",
    "PatientDeceased",
    "PositiveResult",
    "Rule",
    "ServiceRequestExpr",
    "ServiceRequestSelector",
    "StatusNot",
    "Variant",
    "Withhold",
    "default_pack_path",
    "load_pack",
    "pack_json_schema",
    "rules_dir",
    "status_allows",
    "valuesets_dir_for",
]


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
    document, used_valuesets = validate(doc, set(library.known), issues)
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
            lib.issues.extend(issue for issue, _path in pydantic_issues(doc, exc))
            continue
        if source.id != path.stem:
            lib.issues.append(doc.issue(("id",), f"id {source.id!r} must match the file name"))
            continue
        lib.valuesets[source.id] = ValueSet.compile(source)
        lib.raw[source.id] = raw
    return lib
