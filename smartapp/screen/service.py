"""The screen's workflow, without Flask: `present` (read the chart, make it readable, evaluate,
describe what the physician sees, record it) and `sign` (check the decisions, build and submit
the referral, record it). The launch screen calls them; a CDS Hooks entry point or the CLI can
call the same code with the services, settings and clock they hold.

Decisions about the patient are the engine's (`engine.evaluate`, `engine.labels`); what is
shown is described in `screen.shown`; the form and its checks are in `screen.decisions`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Update, bindparam, case, func, update

from smartapp import threads
from smartapp.aids import service as aids
from smartapp.audit import log as referral_log
from smartapp.db import LaunchContext, Referral
from smartapp.detached import DetachedJoinReader, DetachedReader
from smartapp.engine import Chart, Pack, evaluate
from smartapp.engine.readable import readable_chart
from smartapp.fhir.client import ChartLimits, ChartRead, FhirClient, FhirError
from smartapp.launch import client as smart
from smartapp.launch import sessions, signer
from smartapp.screen import decisions as forms
from smartapp.screen.programs import chosen_program
from smartapp.screen.shown import (
    describe_evaluation,
    missing_write_scopes,
    readable_types,
    shown_log_data,
)
from smartapp.staff import caseload as coach_caseload
from smartapp.writeback import outbox, profiles
from smartapp.writeback import resources as writeback
from smartapp.writeback.plan import WritePlan

if TYPE_CHECKING:
    from smartapp.services import Services

log = logging.getLogger("handoff.screen")

HELD_REASON = (
    "The EHR did not grant Handoff write access; "
    "the signed decision is kept in Handoff's referral log."
)


@dataclass(frozen=True)
class ScreenSettings:
    """The settings the screen's workflow reads (from the app's configuration)."""

    observation_days: int
    text_max_chars: int
    max_notices: int
    chart_limits: ChartLimits
    identifier_system: str
    # The coach team's caseload settings, for what the physician is told before Sign.
    caseload: coach_caseload.Settings = field(default_factory=coach_caseload.Settings)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ScreenSettings:
        return cls(
            caseload=coach_caseload.Settings.from_config(config),
            observation_days=config["CHART_OBSERVATION_DAYS"],
            text_max_chars=config["RESOURCE_TEXT_MAX_CHARS"],
            max_notices=config["CHART_MAX_NOTICES"],
            chart_limits=ChartLimits.from_config(config),
            identifier_system=config["REFERRAL_IDENTIFIER_SYSTEM"],
        )


# ---------------------------------------------------------------------------------------
# the launch and its visit


#: Every screen, Sign and signed page reads its launch (detached, as a session gives it) and
#: the referral of its visit, in one statement: the launch keeps its visit's key.
_CONTEXT = DetachedReader(LaunchContext, "id")
_SAME_VISIT = Referral.visit_key == LaunchContext.visit_key
_VISIT = DetachedJoinReader(LaunchContext, Referral, _SAME_VISIT, "id")


def find_context(services: Services, context_id: str) -> LaunchContext | None:
    """The launch context (the caller checks that it belongs to the browser asking)."""
    with services.db.read() as connection:
        return _CONTEXT.one(connection, id=context_id)


def find_visit(services: Services, context_id: str) -> tuple[LaunchContext | None, Referral | None]:
    """The launch context and the referral signed for its visit (in this launch or an earlier
    one), on one connection (the caller checks that the context belongs to the browser)."""
    with services.db.read() as connection:
        context, referral = _VISIT.one(connection, id=context_id)
        if context is None:
            return None, None
        key = visit_key(context)
        if context.visit_key == key:
            return context, referral
        # a launch stored before launches kept their visit's key (migration 0014)
        return context, outbox.visit_referral_read(connection, key)


def visit_key(context: LaunchContext) -> str:
    return writeback.visit_key(context.iss, context.encounter_id, context.patient_id)


def signed_referral(services: Services, context: LaunchContext) -> Referral | None:
    """The referral signed for the context's visit (in this launch or an earlier one)."""
    return outbox.for_visit(services.db, visit_key(context))


# ---------------------------------------------------------------------------------------
# present


def with_fhir(services: Services, context: LaunchContext, call: Callable[[FhirClient], Any]):
    """Run `call(client)` with a live token; on a 401 (expired early, revoked) refresh once and
    retry. A session the EHR ended raises sessions.SessionEnded."""
    try:  # the context as loaded for this request: its token, unless a refresh is due
        return call(sessions.client_for(services, context.id, loaded=context))
    except FhirError as exc:
        if exc.status != 401:
            raise
        log.info("EHR answered 401: refreshing once")
        return call(sessions.client_for(services, context.id, force_refresh=True))


def read_chart(
    services: Services, context: LaunchContext, settings: ScreenSettings, now: datetime
) -> tuple[ChartRead, list[str]]:
    """The chart as the granted scopes let Handoff read it, and the types they do not."""
    allowed, unreadable = readable_types(context.scope)
    read = with_fhir(
        services,
        context,
        lambda client: client.read_chart(
            context.patient_id,
            context.encounter_id,
            now,
            settings.observation_days,
            types=allowed,
            limits=settings.chart_limits,
        ),
    )
    return read, unreadable


def build_shown(
    services: Services,
    context: LaunchContext,
    settings: ScreenSettings,
    now: datetime,
    read: tuple[ChartRead, list[str]] | None = None,
    visit_aids: aids.VisitAids | None = None,
) -> dict:
    """Read the chart (or take the read done: `read`), evaluate the pack, and
    describe what the physician will see. Raises FhirError (the chart could not be read),
    ChartError (it could not be understood) or sessions.SessionEnded. `visit_aids`: what the
    aids recorded for the visit, when the caller read it already."""
    # COWS scores recorded with the calculator and kept in Handoff count like the chart's own.
    recorded = visit_aids or aids.visit_aids(services.db, context)
    kept = list(recorded.kept)
    chart_read, unreadable = read or read_chart(services, context, settings, now)
    chart_read.resources.extend(kept)
    registration = services.registry.by_id(context.registration_id)
    if registration is None:
        raise LookupError(f"no registration {context.registration_id!r} for this launch")
    return shown_from_read(
        chart_read,
        unreadable,
        services.pack,
        settings,
        now,
        encounter_id=context.encounter_id,
        patient_id=context.patient_id,
        missing_writes=missing_write_scopes(context.scope, registration),
    )


def shown_from_read(
    read: ChartRead,
    unreadable: list[str],
    pack: Pack,
    settings: ScreenSettings,
    now: datetime,
    encounter_id: str | None,
    patient_id: str,
    missing_writes: list[str],
) -> dict:
    """What the physician sees for a chart as read (by the launch, or from a CDS Hooks
    prefetch): made readable, evaluated, described. Pure: no I/O, `now` is given.
    `unreadable`: the types the granted scopes did not let Handoff read."""
    # What cannot be read is left out and named (issue 9 item 27); long texts are cut (28).
    readable = readable_chart(read.resources, settings.text_max_chars, settings.max_notices)
    chart: Chart = readable.chart
    # Chart completeness is the engine's input (rules v2): what the scopes did not allow, and
    # what could not be read, decide cautions, the COWS threshold and the notice there.
    incomplete = set(unreadable) | read.incomplete | readable.incomplete_types
    evaluation = evaluate(chart, now, pack, encounter_id=encounter_id, unread=sorted(incomplete))
    shown = describe_evaluation(
        evaluation,
        chart,
        pack,
        now,
        notices=read.notices + readable.notices,
        patient_id=patient_id,
        missing_writes=missing_writes,
    )
    shown["aids"] = aids.for_screen(evaluation, chart, pack, now)  # decision aids to offer
    return shown


def present(
    services: Services,
    context: LaunchContext,
    settings: ScreenSettings,
    now: datetime,
    record: bool = True,
) -> dict:
    """What the physician sees for the launch (see `build_shown`), with who signs (read now
    with the chart, so that Sign itself waits for nothing but its write), recorded on the
    launch and in the referral log (by the caller, with `record` False: the screen records
    it while it renders the page, and answers once both are done)."""
    # The chart is read in this thread: the EHR's answer is the long wait. What does not
    # depend on it (the coach team's caseload, what the aids recorded) is read meanwhile in a
    # thread of its own.
    side = threads.beside("screen-side", _side_reads, services, settings, context, now)
    read = read_chart(services, context, settings, now)
    expectation, recorded = side.result()
    shown = build_shown(services, context, settings, now, read, recorded)
    shown["aids"]["recorded"] = recorded.recorded  # what the aids' partials say was recorded
    if context.encounter_id is None and shown["encounter"]["id"]:
        # Standalone launch without an encounter: the visit the rules chose is this visit
        # (kept on the launch by record_shown).
        context.encounter_id = shown["encounter"]["id"]
    # after the read: a token refresh it needed is done, never two at once
    shown["signer_name"] = signer.display_name(services, context)
    shown["coach_expectation"] = expectation
    if record:
        record_shown(services, context, shown)
    return shown


def _side_reads(
    services: Services, settings: ScreenSettings, context: LaunchContext, now: datetime
) -> tuple[dict, aids.VisitAids]:
    """What the screen reads beside the chart: the visit's aid records, and what the physician
    should expect of the coach team if they sign now (a coach is available, or the handoff
    waits in the team queue, with the warm line): service information from the caseload
    (`smartapp.staff.caseload`), not a clinical decision."""
    found = coach_caseload.expectation(services.db, settings.caseload, services.catalog, now)
    return found.as_dict(), aids.visit_aids(services.db, context)


def _keep_shown(with_encounter: bool) -> Update:
    """The UPDATE of `record_shown` (built once per form; values bound per call)."""
    values: dict[str, Any] = {"shown": bindparam("kept_shown", type_=LaunchContext.shown.type)}
    if with_encounter:  # a standalone launch's visit is the one the rules chose, if none yet
        values["encounter_id"] = func.coalesce(LaunchContext.encounter_id, bindparam("chosen"))
        # and its key with it (SET reads the row as it was: the encounter before this UPDATE)
        values["visit_key"] = case(
            (LaunchContext.encounter_id.is_(None), bindparam("chosen_key")),
            else_=LaunchContext.visit_key,
        )
    return (
        update(LaunchContext)
        .where(LaunchContext.id == bindparam("kept_id"))
        .values(values)
        .execution_options(synchronize_session=False)
    )


_KEEP_SHOWN = {True: _keep_shown(True), False: _keep_shown(False)}


def record_shown(services: Services, context: LaunchContext, shown: dict) -> None:
    """Keep what was shown on the launch (Sign acts on exactly that) and log it."""
    chosen = shown["encounter"]["id"]
    params: dict[str, Any] = {"kept_id": context.id, "kept_shown": shown}
    if chosen:
        # Standalone launch without an encounter: the visit the rules chose is this visit.
        params["chosen"] = chosen
        params["chosen_key"] = writeback.visit_key(context.iss, chosen, context.patient_id)
        context.encounter_id = context.encounter_id or chosen
        context.visit_key = visit_key(context)
    with services.db.session() as db:  # one UPDATE, no ORM object loaded
        found = db.execute(_KEEP_SHOWN[bool(chosen)], params)
        if not found.rowcount:  # type: ignore[attr-defined]
            raise LookupError("the launch context is gone")
        referral_log.append_about(db, "suggestions-shown", context, data=shown_log_data(shown))


# ---------------------------------------------------------------------------------------
# sign


class NothingShown(Exception):
    """Sign before anything was shown for the launch."""


@dataclass
class SignResult:
    """What Sign came to. `outcome`: ``signed`` (the referral is stored; `referral`),
    ``invalid`` (nothing stored; `errors`), ``repeat`` (the same window signed this visit
    already with the same choices), ``conflict`` (signed already otherwise; `conflict`)."""

    outcome: Literal["signed", "invalid", "repeat", "conflict"]
    choices: dict
    referral: Referral | None = None
    errors: list[str] = field(default_factory=list)
    conflict: dict | None = None
    shown: dict | None = None  # a conflict: what was shown when the visit was signed


def sign(
    services: Services,
    context: LaunchContext,
    existing: Referral | None,
    form: forms.SignForm,
    settings: ScreenSettings,
    now: datetime,
    lease_for: str | None = None,
) -> SignResult:
    """Sign the decisions on what was shown for the launch (`context.shown`): check them,
    build the referral and its write plan, and submit it to the outbox (which logs the
    decision). A visit signed already (`existing`, read with the context; another window or
    launch, or a race the submit finds) is not signed again: the result says by whom, and
    which of these choices were not sent. Raises NothingShown when nothing was shown for the
    launch yet. `lease_for`: the caller delivers the new referral at once under this lease
    owner (`outbox.submit`)."""
    shown = context.shown
    if not shown:
        raise NothingShown("Nothing was shown yet for this launch. Reload the page.")
    choices = forms.form_choices(form, shown)
    if existing is not None:
        return after_signed(services, context, shown, existing, form, choices)
    decisions, errors = forms.read_decisions(shown, form)
    mode_error = forms.consult_mode_error(form)
    if mode_error:
        errors.append(mode_error)
    if errors:
        return SignResult("invalid", choices, errors=errors)
    program = chosen_program(services, form)
    signed = signed_decision(services, context, shown, decisions, form.mode, program, now)
    referral, created = submit(services, context, shown, signed, settings, decisions, lease_for)
    if not created:  # another window signed the visit between our check and our submit
        return after_signed(services, context, shown, referral, form, choices)
    if referral.status == "held":
        outbox.hold(services.db, referral.id, HELD_REASON)
    return SignResult("signed", choices, referral=referral)


def signed_decision(
    services: Services,
    context: LaunchContext,
    shown: dict,
    decisions: list[writeback.ItemDecision],
    mode: str,
    program: str | None,
    now: datetime,
) -> writeback.SignedReferral:
    """The signed referral the write-back builds its resources from."""
    if "signer_name" in shown:
        name = shown["signer_name"]
    else:  # shown before Handoff read the signer's name with the chart
        name = signer.display_name(services, context)
    return writeback.SignedReferral(
        iss=context.iss,
        patient_id=context.patient_id,
        encounter_id=context.encounter_id,
        encounter_start=shown["encounter"].get("start"),
        user_ref=context.user_ref,
        user_name=name,
        signed_at=now,
        pack_id=shown["pack"]["id"],
        pack_version=shown["pack"]["version"],
        pack_hash=shown["pack"]["hash"],
        shown=tuple(shown_suggestion(s) for s in shown["suggestions"]),
        decisions=tuple(decisions),
        consult_mode=mode,
        program=program,
        opioid=shown["opioid"],
        extra=aids.for_note(services.db, context),  # the DSM-5 checklist, for the note
    )


def shown_suggestion(s: dict) -> writeback.ShownSuggestion:
    return writeback.ShownSuggestion(
        kind=s["kind"],
        title=s["title"],
        reason=s["reason"],
        variant=s["variant"],
        cautions=tuple(s["cautions"]),
        evidence=tuple(e["reference"] for e in s["evidence"]),
        evidence_words=tuple(e["words"] for e in s["evidence"]),
        rule=s["rule"],
    )


def write_settings(settings: Any, identifier_system: str) -> writeback.WriteSettings:
    """A registration's write settings, as the write-back takes them."""
    return writeback.WriteSettings(
        identifier_system=identifier_system,
        service_request_code=settings.service_request_code,
        note_type=settings.note_type,
        doc_status=settings.doc_status,
        coach_team=settings.coach_team,
        part2_program=settings.part2_program,
        draft_medications=settings.draft_medications,
        medication_codes=settings.medication_codes,
        coach_pool=settings.coach_pool,
    )


def write_plan(
    services: Services, context: LaunchContext, signed: writeback.SignedReferral, system: str
) -> WritePlan:
    """The outbox plan for the EHR's write profile; a write the granted scopes do not allow
    is kept in Handoff (and shown so) instead."""
    registration = services.registry.by_id(context.registration_id)
    if registration is None:
        raise LookupError(f"no registration {context.registration_id!r} for this launch")
    settings = registration.write
    plan = writeback.plan_writes(
        signed, write_settings(settings, system), profiles.profile(settings.profile)
    )
    plan.keep_in_handoff_unless(lambda resource_type: smart.may(context.scope, resource_type, "c"))
    return plan


def submit(
    services: Services,
    context: LaunchContext,
    shown: dict,
    signed: writeback.SignedReferral,
    settings: ScreenSettings,
    decisions: list[writeback.ItemDecision],
    lease_for: str | None = None,
) -> tuple[Referral, bool]:
    """Plan the referral's writes and store it in the outbox: (row, created); `lease_for` as
    `outbox.submit` takes it."""
    plan = write_plan(services, context, signed, settings.identifier_system)
    return outbox.submit(
        services.db,
        visit_key=visit_key(context),
        context_id=context.id,
        iss=context.iss,
        patient_id=context.patient_id,
        encounter_id=context.encounter_id,
        user_ref=context.user_ref,
        decision=forms.decision_record(shown, signed.consult_mode, signed.program, decisions),
        plan=plan,
        lease_for=lease_for,
    )


def after_signed(
    services: Services,
    context: LaunchContext,
    shown: dict,
    referral: Referral,
    form: forms.SignForm,
    choices: dict,
) -> SignResult:
    """Sign on a visit that is signed already: the physician is told by whom and when, what
    was written, and which of their choices were not sent (logged). A repeat of the same Sign
    in the same window (a double click) just shows the result."""
    not_sent = forms.unsent_choices(shown, choices, referral, chosen_program(services, form))
    if referral.context_id == context.id and not not_sent:
        return SignResult("repeat", choices, referral=referral)
    log.warning(
        "sign refused: visit already signed referral=%s differing=%d",
        referral.id[:8],
        len(not_sent),
    )
    with services.db.session() as db:
        referral_log.append_about(
            db,
            "sign-after-signed",
            context,
            data={
                "referral": referral.id,
                "signed_by": referral.user_ref,
                "not_sent": [{k: v for k, v in d.items() if k != "words"} for d in not_sent],
            },
        )
    signed_shown = referral.decision.get("shown") or shown
    conflict = forms.signed_words(referral) | {
        "by_you": bool(referral.user_ref) and referral.user_ref == context.user_ref,
        "written": forms.written_words(referral, signed_shown),
        "not_sent": [d["words"] for d in not_sent],
    }
    return SignResult("conflict", choices, referral=referral, conflict=conflict, shown=signed_shown)
