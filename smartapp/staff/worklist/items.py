"""What the coach sees of each warm handoff (Flask-free): who and where the patient is, how
to reach them, who signed and what was decided, the linkage note, how long the handoff waited
for a coach, its lifecycle and its follow-up plan; and a version per item, so the page can
follow changes without reloading.

Everything comes from what Handoff keeps: the referral as signed (what the screen showed, the
decisions, the write plan's note) and the handoff's row; nothing is read from the EHR here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from smartapp.db import CoachHandoff, Database, Referral
from smartapp.engine import kinds
from smartapp.handoffs import current, followup, service
from smartapp.handoffs.followup import FollowupSettings, Plan
from smartapp.handoffs.lifecycle import BUSINESS_WORDS, OPEN, HandoffState
from smartapp.writeback.outbox import plan_of
from smartapp.writeback.referral import CONSULT_MODES

if TYPE_CHECKING:
    from smartapp.catalog import Catalog, Program

MOUD_KINDS = (kinds.MOUD_BUPRENORPHINE, kinds.MOUD_CONTINUE)


@dataclass(frozen=True)
class ConsultLink:
    """How the coach reaches the program for a telehealth or warm-line consult."""

    program: str
    phone: str
    call: str  # a tel: link
    video: str | None = None  # the program's https video link (catalog data), if it has one


@dataclass(frozen=True)
class Item:
    referral_id: str
    patient_name: str
    patient_id: str
    phone: str | None
    location: str | None
    encounter_start: str | None
    signer_name: str | None
    mode: str
    program: str | None
    moud: str
    naloxone: str
    note_text: str | None
    signed_at: datetime
    state: HandoffState
    delivery: str
    consult_link: ConsultLink | None
    plan: Plan | None

    @property
    def status(self) -> str:
        return self.state.status

    def arrived(self, zone: str) -> str:
        """The ED arrival in the program's time zone, with its abbreviation (the EHR's instant
        may carry any offset; cutting the string kept its digits and dropped the offset)."""
        value = self.encounter_start or ""
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if moment.tzinfo is None:  # a dateTime without an offset: as the EHR gave it
            return value[:16].replace("T", " ")
        return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")

    @property
    def coach_name(self) -> str | None:
        return self.state.owner_name

    @property
    def coach_ref(self) -> str | None:
        return self.state.owner_ref

    @property
    def phone_link(self) -> str | None:
        """The patient's phone as a tel: link (digits and a leading +)."""
        if not self.phone:
            return None
        return "tel:" + "".join(c for c in self.phone if c.isdigit() or c == "+")

    @property
    def mode_words(self) -> str:
        return CONSULT_MODES.get(self.mode, self.mode)

    @property
    def step_words(self) -> str | None:
        step = self.state.business_status
        return BUSINESS_WORDS.get(step, step) if step else None

    def waiting_minutes(self, now: datetime) -> int:
        """Minutes from Sign to a coach's acceptance (to now while nobody has accepted)."""
        end = self.state.accepted_at or now
        return max(0, int((_aware(end, now) - _aware(self.signed_at, now)).total_seconds() // 60))

    def followup_state(self, now: datetime, settings: FollowupSettings) -> str:
        return self.plan.state(now, settings) if self.plan else "done"

    def version(self, now: datetime, settings: FollowupSettings) -> str:
        """A short hash of everything the row shows that changes (not the waiting minutes),
        so the page replaces a row only when something happened."""
        state = self.state
        shown: list[Any] = [
            state.status,
            state.business_status,
            state.owner_ref,
            state.attempts,
            state.contact_note,
            state.linked_program,
            state.closed_reason,
            self.delivery,
            self.followup_state(now, settings),
        ]
        if self.plan:
            shown += [[c.day, c.done_at is not None] for c in self.plan.contacts]
            shown += [sorted(self.plan.outcomes)] + [self.plan.outcomes_due(now, settings)]
        text = json.dumps(shown, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _aware(value: datetime, like: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=like.tzinfo)


def decision_words(referral: Referral, wanted: tuple[str, ...]) -> str:
    """The physician's decision on these suggestion kinds, in words ("not suggested" when
    none was shown)."""
    decisions = {d["kind"]: d for d in referral.decision.get("decisions", [])}
    shown = referral.decision.get("shown") or {}
    titles = {s["kind"]: s.get("title", s["kind"]) for s in shown.get("suggestions", [])}
    parts = []
    for kind in wanted:
        decided = decisions.get(kind)
        if decided is None:
            continue
        title = titles.get(kind, kind.replace("-", " "))
        if decided.get("accepted"):
            parts.append(f"{title}: accepted")
        else:
            why = decided.get("reason") or "no reason given"
            if decided.get("text"):
                why += f" ({decided['text']})"
            parts.append(f"{title}: declined, {why}")
    return "; ".join(parts) or "Not suggested"


def note_text(referral: Referral) -> str | None:
    """The linkage note as written (the DocumentReference of the write plan)."""
    op = plan_of(referral).created("DocumentReference")
    if op is None:
        return None
    for content in op.resource.get("content", []):
        data = (content.get("attachment") or {}).get("data")
        if data:
            try:
                return base64.b64decode(data).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
    return None


def program_in_catalog(catalog: Catalog | None, words: str | None) -> Program | None:
    """The catalog program named by the words the referral carries ("Name (phone)"), or by
    its id."""
    return catalog.named(words) if catalog is not None else None


def consult_link(
    catalog: Catalog | None, mode: str, program: Program | None, warm_line: Program | None
) -> ConsultLink | None:
    """For a telehealth or warm-line consult: the program's call link and, where the catalog
    gives one, its video link (a warm-line consult without a chosen program: the warm line)."""
    if mode not in ("telehealth", "warm-line"):
        return None
    chosen = program or (warm_line if mode == "warm-line" else None)
    if chosen is None:
        return None
    return ConsultLink(chosen.name, chosen.phone, chosen.call_link, chosen.video_link)


def build_item(
    referral: Referral,
    row: CoachHandoff | None,
    plan: Plan | None,
    catalog: Catalog | None,
    warm_line: Program | None,
) -> Item:
    shown = referral.decision.get("shown") or {}
    contact = shown.get("contact") or {}
    mode = referral.decision.get("consult_mode", "in-person")
    words = referral.decision.get("program")
    return Item(
        referral_id=referral.id,
        patient_name=(shown.get("patient") or {}).get("name") or referral.patient_id,
        patient_id=referral.patient_id,
        phone=contact.get("phone"),
        location=contact.get("location"),
        encounter_start=(shown.get("encounter") or {}).get("start"),
        signer_name=shown.get("signer_name"),
        mode=mode,
        program=words,
        moud=decision_words(referral, MOUD_KINDS),
        naloxone=decision_words(referral, (kinds.NALOXONE_KIT,)),
        note_text=note_text(referral),
        signed_at=referral.created_at,
        state=service.state_of(row, referral.id),
        delivery=referral.status,
        consult_link=consult_link(catalog, mode, program_in_catalog(catalog, words), warm_line),
        plan=plan,
    )


def items(
    db: Database,
    now: datetime,
    settings: FollowupSettings | None = None,
    *,
    catalog: Catalog | None = None,
    warm_line: Program | None = None,
    include_closed: bool = False,
) -> list[Item]:
    """Handoffs with an accepted coach consult, oldest first: the open ones, and closed ones
    whose follow-up is due or overdue or whose outcome is due (all with `include_closed`)."""
    settings = settings or FollowupSettings()
    with db.session() as session:
        if include_closed:
            found = list(session.scalars(select(Referral).order_by(Referral.created_at)))
        else:  # closed handoffs past the last outcome day have nothing due: never read
            found = current.referrals(session, current.horizon(now, settings))
        referrals = [r for r in found if service.is_handoff(r)]
        rows: dict[str, CoachHandoff] = {}  # in batches: PostgreSQL takes 65,535 values at most
        for ids in followup.in_batches(r.id for r in referrals):
            query = select(CoachHandoff).where(CoachHandoff.referral_id.in_(ids))
            rows.update((h.referral_id, h) for h in session.scalars(query))
    followup.ensure_plans(db, referrals, settings)
    plans = followup.plans(db, referrals)
    out = []
    for referral in referrals:
        item = build_item(
            referral, rows.get(referral.id), plans.get(referral.id), catalog, warm_line
        )
        if include_closed or item.status in OPEN or _followup_pending(item, now, settings):
            out.append(item)
    return out


def _followup_pending(item: Item, now: datetime, settings: FollowupSettings) -> bool:
    if item.plan is None or item.state.owner_ref is None:
        return False
    return item.followup_state(now, settings) in ("due", "overdue") or bool(
        item.plan.outcomes_due(now, settings)
    )


def snapshot(
    found: list[Item],
    now: datetime,
    settings: FollowupSettings,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the page polls: each item's id and version, and one version for the whole list.
    `extra`: more the page shows per item (by referral id), such as who it is shared with."""
    extra = extra or {}

    def version(item: Item) -> str:
        base = item.version(now, settings)
        if item.referral_id not in extra:
            return base
        more = json.dumps(extra[item.referral_id], sort_keys=True, default=str)
        return hashlib.sha256((base + more).encode()).hexdigest()[:16]

    rows = [{"id": i.referral_id, "version": version(i)} for i in found]
    whole = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
    return {"version": whole, "items": rows}
