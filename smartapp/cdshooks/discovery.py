"""The CDS services Handoff offers (`GET /cds-services`) and their settings. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smartapp.cdshooks import prefetch
from smartapp.cdshooks.models import DiscoveryResponse, ServiceDefinition
from smartapp.screen.service import ScreenSettings

USAGE = (
    "The EHR registers Handoff as a SMART app too (the card's link opens it on the same "
    "visit) and as a trusted CDS client in Handoff (launch/cds-clients/: its issuer and JWKS, "
    "ES384 or RS384). Prefetch what the templates ask, or give fhirAuthorization with patient "
    "read scopes for what is not prefetched; what neither gives is treated as unread. Send "
    "feedback for accepted and overridden cards: an accepted coach referral is Handoff's "
    "signed referral (write-back and warm handoff)."
)


@dataclass(frozen=True)
class HookService:
    id: str
    hook: str
    title: str
    description: str
    orders: bool = False  # order-select / order-sign: a card only for trigger orders


SERVICES = (
    HookService(
        "handoff-patient-view",
        "patient-view",
        "Handoff: peer recovery coach and MOUD",
        "When a chart opens: the opt-out peer recovery coach referral, buprenorphine and a "
        "naloxone kit for a patient with substance use evidence, with the evidence.",
    ),
    HookService(
        "handoff-encounter-start",
        "encounter-start",
        "Handoff at the start of the visit",
        "At the start of an encounter: the same offer as when the chart opens.",
    ),
    HookService(
        "handoff-order-select",
        "order-select",
        "Handoff when naloxone, buprenorphine or an opioid is ordered",
        "When naloxone, buprenorphine or an opioid is selected for a patient with OUD "
        "evidence: the coach referral and the naloxone kit.",
        orders=True,
    ),
    HookService(
        "handoff-order-sign",
        "order-sign",
        "Handoff when naloxone, buprenorphine or an opioid order is signed",
        "When such an order is signed for a patient with OUD evidence: the coach referral "
        "and the naloxone kit.",
        orders=True,
    ),
)
BY_ID = {s.id: s for s in SERVICES}


def discovery() -> dict:
    """The discovery document, checked against the CDS Hooks model."""
    return DiscoveryResponse(
        services=[
            ServiceDefinition(
                hook=s.hook,
                title=s.title,
                description=s.description,
                id=s.id,
                prefetch=prefetch.templates(),
                usageRequirements=USAGE,
            )
            for s in SERVICES
        ]
    ).body()


@dataclass(frozen=True)
class CdsSettings:
    """The CDS Hooks settings (Defaults CDS_*) and the screen's, which the chart read shares."""

    public_url: str
    budget_seconds: float
    indicator: str
    override_system: str
    order_valuesets: tuple[str, ...]
    jwt_max_seconds: int
    screen: ScreenSettings

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CdsSettings:
        return cls(
            public_url=str(config["PUBLIC_URL"]).rstrip("/"),
            budget_seconds=float(config["CDS_BUDGET_SECONDS"]),
            indicator=str(config["CDS_CARD_INDICATOR"]),
            override_system=str(config["CDS_OVERRIDE_SYSTEM"]),
            order_valuesets=tuple(config["CDS_ORDER_VALUESETS"]),
            jwt_max_seconds=int(config["CDS_JWT_MAX_SECONDS"]),
            screen=ScreenSettings.from_config(config),
        )

    def service_url(self, service_id: str | None = None, feedback: bool = False) -> str:
        """The exact URL a JWT's `aud` must name for this endpoint."""
        url = f"{self.public_url}/cds-services"
        if service_id:
            url += f"/{service_id}"
        return url + ("/feedback" if feedback else "")
