"""CDS Hooks 2.0 bodies as pydantic models (https://cds-hooks.hl7.org/2.0/): the discovery
response, a hook request, the response with its cards, and feedback. Requests are parsed with
them (a malformed one is refused with the first problem in words); responses are built with
them, so what Handoff sends is checked against the specification's shapes before it leaves.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class Model(BaseModel):
    """Unknown members are allowed (the specification reserves `extension`); null and empty
    members are left out when a body is written (CDS Hooks: JSON elements are never null)."""

    model_config = ConfigDict(extra="allow")

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


class Coding(Model):
    code: str = Field(min_length=1)
    system: str = Field(min_length=1)
    display: str | None = None


# -- discovery ---------------------------------------------------------------------------


class ServiceDefinition(Model):
    hook: str = Field(min_length=1)
    title: str | None = None
    description: str = Field(min_length=1)
    id: str = Field(pattern=r"^[A-Za-z0-9._~-]+$")
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class DiscoveryResponse(Model):
    services: list[ServiceDefinition]


# -- a hook request ----------------------------------------------------------------------


class FhirAuthorization(Model):
    access_token: str = Field(min_length=1)
    token_type: Literal["Bearer"]
    expires_in: int = Field(ge=0)
    scope: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    patient: str | None = None


class HookRequest(Model):
    hook: str = Field(min_length=1)
    hookInstance: str = Field(pattern=UUID_PATTERN)
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None

    @field_validator("fhirServer")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("fhirServer must be an http(s) URL")
        return value


class PatientContext(Model):
    """The context fields Handoff reads (patient-view, encounter-start, order-select/sign)."""

    userId: str = Field(min_length=3, pattern=r"^[A-Za-z]+/[^/\s]+$")
    patientId: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9\-.]+$")
    encounterId: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9\-.]+$"
    )
    selections: list[str] | None = None
    draftOrders: dict[str, Any] | None = None


# -- the response ------------------------------------------------------------------------


class Source(Model):
    label: str = Field(min_length=1)
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(Model):
    type: Literal["create", "update", "delete"]
    description: str = Field(min_length=1)
    resource: dict[str, Any] | None = None
    resourceId: list[str] | None = None


class Suggestion(Model):
    label: str = Field(min_length=1)
    uuid: str | None = Field(default=None, pattern=UUID_PATTERN)
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(Model):
    label: str = Field(min_length=1)
    url: str = Field(min_length=1)
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(Model):
    uuid: str | None = Field(default=None, pattern=UUID_PATTERN)
    summary: str = Field(min_length=1, max_length=139)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None  # CDS Hooks reserves `extension` for this

    @model_validator(mode="after")
    def _selection_behavior(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when a card has suggestions")
        return self


class HookResponse(Model):
    cards: list[Card]
    systemActions: list[Action] | None = None


# -- feedback ----------------------------------------------------------------------------


class AcceptedSuggestion(Model):
    id: str = Field(pattern=UUID_PATTERN)


class OverrideReason(Model):
    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=2000)


class FeedbackItem(Model):
    card: str = Field(pattern=UUID_PATTERN)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: str = Field(min_length=1)


class Feedback(Model):
    feedback: list[FeedbackItem] = Field(min_length=1)


def first_problem(error: ValidationError) -> str:
    """The first validation problem in words, naming the member (for a 400's reason)."""
    item = error.errors()[0]
    where = ".".join(str(p) for p in item["loc"]) or "(body)"
    return f"{where}: {item['msg']}"
