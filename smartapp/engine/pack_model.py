"""Rule pack models, part 2: expressions (a fact name or a one-key mapping), suggestion
rules, withhold reasons, decline reasons and the pack document as written."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter

from .pack_selectors import (
    NAME,
    NO_SUGGESTIONS,
    AllergySelector,
    Coding,
    ConditionSelector,
    Duration,
    FactName,
    LatestObservationSelector,
    MedicationSelector,
    Model,
    ObservationSelector,
    ServiceRequestSelector,
    Slug,
)

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


EXPRESSION_ADAPTER = TypeAdapter(Expression)
RULE_ADAPTER = TypeAdapter(Rule)
WITHHOLD_ADAPTER = TypeAdapter(Withhold)
DECLINE_REASON_ADAPTER = TypeAdapter(DeclineReasonSpec)
