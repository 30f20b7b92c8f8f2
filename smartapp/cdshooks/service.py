"""A CDS Hooks call, without Flask: parse it, skip a visit already decided, read the chart
(prefetch, then the FHIR server), describe it exactly as the launch screen does
(`screen.service.shown_from_read`: one engine call for both entry points), keep what was
shown and log it as the screen does, and answer with the card, within a time budget (no card
rather than a late one).

What was shown is kept on a launch context whose id is the card's uuid (browser id
`cds-hooks:<client>`: no browser holds it), without the call's token (CDS Hooks: transient,
never kept): the feedback signs on exactly what was shown, and the outbox writes with
Handoff's backend access, or with the next launch of the visit (launch.sessions).
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import bindparam, insert, literal, select, union_all
from sqlalchemy.orm import Session

from smartapp import threads
from smartapp.audit import log as referral_log
from smartapp.audit.models import LogEvent
from smartapp.cdshooks import cards, prefetch
from smartapp.cdshooks.clients import CdsClient
from smartapp.cdshooks.discovery import CdsSettings, HookService
from smartapp.cdshooks.models import HookRequest, HookResponse, PatientContext, first_problem
from smartapp.cdshooks.writer import writer_for
from smartapp.db import LaunchContext, Referral
from smartapp.engine import ChartError
from smartapp.screen.service import shown_from_read, shown_suggestion
from smartapp.screen.shown import shown_log_data
from smartapp.writeback import resources as writeback

if TYPE_CHECKING:
    from smartapp.services import Services

log = logging.getLogger("handoff.cdshooks")

OVERRIDE_EVENT = "cds-override"
NO_CARDS: dict = {"cards": []}


class BadRequest(ValueError):
    """A malformed call (400 with this reason)."""


class PreconditionFailed(ValueError):
    """Data the service needs is neither prefetched nor readable (412, CDS Hooks)."""


def browser_id(client: CdsClient) -> str:
    """The launch contexts of CDS calls belong to no browser."""
    return f"cds-hooks:{client.id}"


@dataclass(frozen=True)
class Call:
    """A parsed, checked hook call."""

    request: HookRequest
    context: PatientContext
    iss: str  # the registration's FHIR base: the visit key is the launch's
    registration_id: str


def parse(services: Services, client: CdsClient, service: HookService, body: Any) -> Call:
    """The call, or BadRequest naming the first problem."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object (a CDS Hooks request)")
    try:
        request = HookRequest.model_validate(body)
        context = PatientContext.model_validate(request.context)
    except ValidationError as exc:
        raise BadRequest(first_problem(exc)) from None
    if request.hook != service.hook:
        raise BadRequest(f"hook: this service answers {service.hook}, not {request.hook}")
    if request.fhirAuthorization is not None and not request.fhirServer:
        raise BadRequest("fhirServer: required with fhirAuthorization")
    registration = services.registry.by_id(client.registration)
    if registration is None:
        raise BadRequest(f"the CDS client {client.id} names no known EHR registration")
    if request.fhirServer and request.fhirServer.rstrip("/") != registration.iss:
        raise BadRequest("fhirServer: not the FHIR server this CDS client is registered with")
    return Call(request, context, registration.iss, registration.id)


def _decided_statement(with_encounter: bool) -> Any:
    """Whether a visit has a referral or a card override: built once per form (an encounter
    compared by value, or none: IS NULL), its values bound at execution."""
    referral = select(literal(1)).where(Referral.visit_key == bindparam("key"))
    encounter = (
        LogEvent.encounter_id == bindparam("encounter_id")
        if with_encounter
        else LogEvent.encounter_id.is_(None)
    )
    override = select(literal(1)).where(
        LogEvent.type == OVERRIDE_EVENT,
        LogEvent.patient_id == bindparam("patient_id"),
        encounter,
        LogEvent.iss == bindparam("iss"),
    )
    return union_all(referral, override).limit(1)


_DECIDED = {True: _decided_statement(True), False: _decided_statement(False)}
# A card's launch context, one Core INSERT with the row given at execution.
_KEEP_SHOWN = insert(LaunchContext.__table__)  # type: ignore[arg-type]


def decided(services: Services, iss: str, patient_id: str, encounter_id: str | None) -> bool:
    """Signed in Handoff or accepted on a card (a referral), or overridden on a card: one
    query (the referral's unique key, the log's patient index), no unit of work."""
    values = {"key": writeback.visit_key(iss, encounter_id, patient_id), "patient_id": patient_id}
    values["iss"] = iss
    if encounter_id:
        values["encounter_id"] = encounter_id
    with services.db.read() as connection:
        found = connection.execute(_DECIDED[bool(encounter_id)], values).first()
        return found is not None


def ordered(pack: Any, draft_orders: dict | None, valuesets: tuple[str, ...]) -> bool:
    """Whether a draft order is for one of the trigger value sets of the pack (naloxone,
    buprenorphine, methadone by default; CDS_ORDER_VALUESETS)."""
    sets = [pack.valuesets[name] for name in valuesets if name in pack.valuesets]
    for entry in (draft_orders or {}).get("entry", []) or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        concept = (resource or {}).get("medicationCodeableConcept") or {}
        for coding in concept.get("coding", []) if isinstance(concept, dict) else []:
            system, code = coding.get("system"), coding.get("code")
            strings = isinstance(system, str) and isinstance(code, str)
            if strings and any(vs.contains(system, code) for vs in sets):
                return True
    return False


def answer(
    services: Services,
    settings: CdsSettings,
    client: CdsClient,
    service: HookService,
    body: Any,
    now: datetime | None = None,
) -> dict:
    """The response body: parse first (BadRequest, PreconditionFailed raise at once), then
    the rest within the budget; past it, no card (and nothing of the late work is kept)."""
    call = parse(services, client, service, body)
    late = threading.Event()
    args = (services, settings, client, service, call, now, late)
    work = threads.beside("cds-hook", respond, *args)
    try:
        return work.result(timeout=settings.budget_seconds)
    except FutureTimeout:
        late.set()
        log.warning(
            "CDS call answered without a card: over the %.2fs budget", settings.budget_seconds
        )
        return NO_CARDS


def respond(
    services: Services,
    settings: CdsSettings,
    client: CdsClient,
    service: HookService,
    call: Call,
    now: datetime | None,
    late: threading.Event,
) -> dict:
    """The card for the call's visit, or none (decided already, nothing to offer, no trigger
    order, the chart unreadable)."""
    now = now or datetime.now(UTC)
    ctx = call.context
    if ctx.encounterId and decided(services, call.iss, ctx.patientId, ctx.encounterId):
        return NO_CARDS
    if service.orders and not ordered(services.pack, ctx.draftOrders, settings.order_valuesets):
        return NO_CARDS
    shown = evaluate_call(services, settings, call, now, late)
    if shown is None or not shown["suggestions"]:
        return NO_CARDS
    encounter_id = ctx.encounterId or shown["encounter"]["id"]
    if not ctx.encounterId and decided(services, call.iss, ctx.patientId, encounter_id):
        return NO_CARDS
    card_id = str(uuid.uuid4())
    registration = services.registry.by_id(call.registration_id)
    assert registration is not None
    key = writeback.visit_key(call.iss, encounter_id, ctx.patientId)
    signed = accept_all(call, shown, encounter_id, now)
    orders = cards.draft_orders(
        shown, signed, registration.write, settings.screen.identifier_system
    )
    card = cards.build_card(
        shown,
        orders,
        cards.CardSettings(
            card_id=card_id,
            visit_key=key,
            launch_url=f"{settings.public_url}/launch",
            indicator=settings.indicator,
            override_system=settings.override_system,
            source_url=settings.public_url,
        ),
        cards.pack_label(shown),
    )
    shown["signer_name"] = None  # the card's accept names the user by reference only
    shown["cds"] = {
        "client": client.id,
        "service": service.id,
        "hook": service.hook,
        "orders": sorted(orders),
        "visit": key,
    }
    if late.is_set():
        return NO_CARDS
    keep_shown(services, client, call, shown, card_id, encounter_id, now)
    return HookResponse(cards=[card]).body()


def evaluate_call(
    services: Services,
    settings: CdsSettings,
    call: Call,
    now: datetime,
    late: threading.Event,
) -> dict | None:
    """What the screen would show for the call's chart (None: no patient to evaluate)."""
    ctx, request = call.context, call.request
    try:
        found = prefetch.read_prefetch(request.prefetch, ctx.patientId)
    except prefetch.Malformed as exc:
        raise BadRequest(str(exc)) from None
    access = None
    if request.fhirAuthorization is not None and request.fhirServer:
        access = prefetch.Access(request.fhirServer, request.fhirAuthorization.access_token)
    elif "Patient" in found.missing:
        raise PreconditionFailed("prefetch.patient is missing and no fhirAuthorization was given")
    budget = settings.budget_seconds
    timeout = (min(services.timeout[0], budget), min(services.timeout[1], budget))
    read = prefetch.chart_of(
        found,
        access,
        ctx.patientId,
        ctx.encounterId,
        now,
        settings.screen.observation_days,
        settings.screen.chart_limits,
        timeout,
    )
    if "Patient" in read.incomplete or late.is_set():
        log.warning("CDS call without a card: the patient could not be read")
        return None
    try:
        return shown_from_read(
            read,
            [],
            services.pack,
            settings.screen,
            now,
            encounter_id=ctx.encounterId,
            patient_id=ctx.patientId,
            missing_writes=[],
        )
    except ChartError as exc:
        log.warning("CDS call without a card: the chart could not be understood (%s)", exc)
        return None


def accept_all(call: Call, shown: dict, encounter_id: str | None, now: datetime):
    """The referral as if every suggestion were accepted: the shape of the card's drafts."""
    return writeback.SignedReferral(
        iss=call.iss,
        patient_id=call.context.patientId,
        encounter_id=encounter_id,
        encounter_start=shown["encounter"].get("start"),
        user_ref=call.context.userId,
        user_name=None,
        signed_at=now,
        pack_id=shown["pack"]["id"],
        pack_version=shown["pack"]["version"],
        pack_hash=shown["pack"]["hash"],
        shown=tuple(shown_suggestion(s) for s in shown["suggestions"]),
        decisions=tuple(writeback.ItemDecision(s["kind"], True) for s in shown["suggestions"]),
        opioid=shown["opioid"],
    )


def keep_shown(
    services: Services,
    client: CdsClient,
    call: Call,
    shown: dict,
    card_id: str,
    encounter_id: str | None,
    now: datetime,
) -> None:
    """Keep what the card shows (a launch context under the card's id) and log it as the
    screen does (`suggestions-shown`), in one unit of work (committed with the other calls'
    of the moment: `writer`)."""
    # The call's access token is transient (CDS Hooks): never kept. The writes of an accept
    # go with Handoff's backend access, or wait for the next launch of the visit.
    expired = {"access_token": ""}

    row = {
        "id": card_id,
        "browser_id": browser_id(client),
        "registration_id": call.registration_id,
        "iss": call.iss,
        "patient_id": call.context.patientId,
        "encounter_id": encounter_id,
        "user_ref": call.context.userId,
        "scope": "",
        "need_patient_banner": 0,
        "token_ciphertext": services.cipher.encrypt(expired, card_id),
        "token_endpoint": "",
        "access_expires_at": now,
        "shown": shown,
    }
    data = shown_log_data(shown) | {"entry": "cds-hooks", "card": card_id}
    data["hook"] = call.request.hook

    def record(db: Session) -> None:
        db.execute(_KEEP_SHOWN, row)  # one INSERT, no ORM object (the writer lock first)
        referral_log.append_about(db, "suggestions-shown", SimpleNamespace(**row), data=data)

    writer_for(services.db).run(record)
