"""Rule test cases: what a chart must yield, and the diff when it does not.

The same comparison serves ``rules test`` (YAML cases in ``rules/tests/``) and the
pytest suite (``expected.json`` of the shared scenarios). Reading files is the CLI's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .evaluate import Evaluation, Suggestion, Withheld


class ExpectedSuggestion(BaseModel):
    """One expected suggestion; ``variant`` and ``cautions`` must match exactly.

    Leaving them out means no variant and no cautions. The suggestion's evidence must
    include at least one of ``evidence_any`` (when given).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    variant: str | None = None
    cautions: tuple[str, ...] = ()
    evidence_any: tuple[str, ...] = ()


class ExpectedWithheld(BaseModel):
    """One expected withheld suggestion: its kind and its first reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    reason: str


class RuleCase(BaseModel):
    """A rule test case file: a chart, a time, an encounter, the types the caller could not
    read, and the expected suggestions, withheld suggestions and (when given) notices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    story: str | None = None
    chart: str = Field(min_length=1, description="chart file, relative to the case file")
    now: datetime
    encounter: str | None = None
    pack: str | None = Field(default=None, description="pack file, relative to the case file")
    unread: tuple[str, ...] = ()
    expected: tuple[ExpectedSuggestion, ...] = ()
    withheld: tuple[ExpectedWithheld, ...] = ()
    notices: tuple[str, ...] | None = Field(
        default=None, description="notice codes, in order; omitted: not checked"
    )

    @field_validator("now")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        """A time without a zone is UTC."""
        return value if value.tzinfo else value.replace(tzinfo=UTC)


def compare(expected: Sequence[ExpectedSuggestion], actual: Sequence[Suggestion]) -> list[str]:
    """Differences between expected and actual suggestions; empty when they match.

    ``-`` a missing suggestion, ``+`` an unexpected one, ``~`` a mismatch in one.
    """
    diff: list[str] = []
    by_kind = {s.kind: s for s in actual}
    wanted = {e.kind for e in expected}
    for exp in expected:
        got = by_kind.get(exp.kind)
        if got is None:
            diff.append(f"- missing    {exp.kind}")
            continue
        if got.variant != exp.variant:
            diff.append(f"~ {exp.kind}: variant: expected {exp.variant!r}, got {got.variant!r}")
        if sorted(got.cautions) != sorted(exp.cautions):
            diff.append(
                f"~ {exp.kind}: cautions: expected {sorted(exp.cautions)}, "
                f"got {sorted(got.cautions)}"
            )
        if exp.evidence_any and not set(exp.evidence_any) & set(got.evidence):
            diff.append(
                f"~ {exp.kind}: evidence: expected any of {list(exp.evidence_any)}, "
                f"got {list(got.evidence)}"
            )
    for got in actual:
        if got.kind not in wanted:
            diff.append(
                f"+ unexpected {got.kind} (rule {got.rule}, variant {got.variant!r}, "
                f"evidence {list(got.evidence)})"
            )
    return diff


def compare_withheld(expected: Sequence[ExpectedWithheld], actual: Sequence[Withheld]) -> list[str]:
    """Differences in withheld suggestions (kind and first reason); empty when they match."""
    diff: list[str] = []
    by_kind = {w.kind: w for w in actual}
    for exp in expected:
        got = by_kind.get(exp.kind)
        if got is None:
            diff.append(f"- missing    withheld {exp.kind} ({exp.reason})")
        elif got.reason != exp.reason:
            diff.append(
                f"~ withheld {exp.kind}: reason: expected {exp.reason!r}, got {got.reason!r}"
            )
    wanted = {e.kind for e in expected}
    for got in actual:
        if got.kind not in wanted:
            diff.append(
                f"+ unexpected withheld {got.kind} ({', '.join(r.reason for r in got.reasons)})"
            )
    return diff


def compare_case(case: RuleCase, result: Evaluation) -> list[str]:
    """Every difference between a case and an evaluation: suggestions, withheld, notices."""
    diff = compare(case.expected, result.suggestions)
    diff += compare_withheld(case.withheld, result.withheld)
    if case.notices is not None:
        got = [n.code for n in result.notices]
        if got != list(case.notices):
            diff.append(f"~ notices: expected {list(case.notices)}, got {got}")
    return diff
