"""The patient's discharge sheet: one page in plain language (English, Spanish), built from the
catalog and the sheet's text files (`catalog/sheet/<language>.yaml`: every word a patient
reads is there, with its sources; none in Python). Flask-free: `build` returns the sheet as
data; the HTML template and the PDF (`aftercare.pdf`) lay it out.

What is on it: the coach (where the physician's coach referral stands after Sign and every
amendment) and the program chosen, with phone and hours; the warm line; what happens next;
how to use naloxone; where to get buprenorphine (the catalog's programs that start it). What
is never on it: the patient's name, a diagnosis, the evidence, any decline or its reason, or a
coach or program the patient did not accept (a sheet can be seen by others).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from smartapp.aftercare import amend
from smartapp.catalog.hours import HoursWords, hours_text
from smartapp.catalog.programs import Catalog, Program
from smartapp.db import LaunchContext
from smartapp.staff import caseload

if TYPE_CHECKING:
    from smartapp.services import Services

LANGUAGES = ("en", "es")
#: The programs listed under "where to get buprenorphine" (the page stays one page).
MAX_BUP_PROGRAMS = 3
#: The keys every language file must have (checked on load, so a missing text fails loudly).
REQUIRED = (
    "title",
    "intro",
    "labels",
    "hours",
    "coach",
    "program",
    "warm_line",
    "next",
    "naloxone",
    "buprenorphine",
    "footer",
    "sources",
)


class SheetTextError(ValueError):
    """A sheet text file that is missing or incomplete; names the file and the key."""


@functools.cache
def texts(folder: str, language: str) -> dict[str, Any]:
    """The sheet's words in `language` (cached per folder and language)."""
    if language not in LANGUAGES:
        raise SheetTextError(f"no discharge sheet in {language!r} (languages: {LANGUAGES})")
    path = Path(folder) / f"{language}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SheetTextError(f"{path}: {exc}") from exc
    missing = [key for key in REQUIRED if key not in (data or {})]
    if missing:
        raise SheetTextError(f"{path}: missing {', '.join(missing)}")
    return data


@dataclass(frozen=True)
class Place:
    """A program or line as the patient reads it."""

    name: str
    phone: str | None
    hours: str | None
    address: str | None = None
    same_day: bool = False


@dataclass(frozen=True)
class Sheet:
    """The sheet's content, in one language: headings and texts from the language file,
    places from the catalog and the signed referral."""

    language: str
    text: dict[str, Any]
    coach: str | None  # the coach paragraph (None: no coach referral stands)
    program: Place | None  # the program chosen at Sign or in an amendment
    warm_line: Place | None
    next_steps: list[str] = field(default_factory=list)
    buprenorphine: list[Place] = field(default_factory=list)


def hours_words(text: dict[str, Any]) -> HoursWords:
    words = text["hours"]
    return HoursWords(
        tuple(words["days"]), words["daily"], words["all_day"], words["none"], words.get("clock")
    )


def place(program: Program, text: dict[str, Any]) -> Place:
    return Place(
        name=program.name,
        phone=program.phone,
        hours=hours_text(program.windows, hours_words(text)),
        address=program.address,
        same_day=program.same_day_bup,
    )


def program_named(catalog: Catalog | None, words: str | None) -> Program | None:
    """The catalog program the referral names ("name (phone)", the name, or the id)."""
    return catalog.named(words) if catalog is not None else None


def warm_line(
    catalog: Catalog | None, settings: caseload.Settings, text: dict[str, Any]
) -> Place | None:
    """The catalog's warm line (COACH_WARM_LINE_PROGRAM, else a peer-support program named a
    warm line), whether or not it is open now: the sheet is for later."""
    if catalog is None:
        return None
    if settings.warm_line_program:
        try:
            return place(catalog.get(settings.warm_line_program), text)
        except KeyError:
            return None
    for program in catalog.programs(service="peer-support"):
        if caseload.WARM_LINE_NAME.search(program.name):
            return place(program, text)
    return None


def bup_programs(catalog: Catalog | None, chosen: Program | None, text: dict) -> list[Place]:
    """Programs that start buprenorphine and take new patients: the chosen one first, then
    same-day starts first."""
    if catalog is None:
        return []
    found = catalog.programs(service="buprenorphine", accepting_new=True)
    found.sort(key=lambda p: (chosen is None or p.id != chosen.id, not p.same_day_bup))
    return [place(p, text) for p in found[:MAX_BUP_PROGRAMS]]


def build(
    services: Services,
    context: LaunchContext,
    language: str,
    settings: caseload.Settings,
    folder: str,
) -> Sheet:
    """The sheet for the launch's visit (raises amend.AmendError when it is not signed,
    SheetTextError for a language without a complete text file)."""
    text = texts(folder, language)
    current = amend.state(services, context)
    if current is None:
        raise amend.AmendError("Sign the visit first; the sheet says what was chosen.")
    standing = current.standing
    catalog = services.catalog
    coach = program = None
    words = None
    if standing is not None:
        mode = standing.decision.get("consult_mode") or "in-person"
        coach = text["coach"].get(mode) or text["coach"]["in-person"]
        words = standing.decision.get("program")
        chosen = program_named(catalog, words)
        program = place(chosen, text) if chosen else _typed(words)
    else:
        chosen = None
    nexts = text["next"]
    steps = list(nexts["with_coach"] if coach else nexts["without"])
    if program is not None:
        steps += nexts["with_program"]
    steps += nexts["always"]
    return Sheet(
        language=language,
        text=text,
        coach=coach,
        program=program,
        warm_line=warm_line(catalog, settings, text),
        next_steps=steps,
        buprenorphine=bup_programs(catalog, chosen, text),
    )


def _typed(words: str | None) -> Place | None:
    """A program the physician typed (not in the catalog): its words, no phone or hours."""
    return Place(name=words, phone=None, hours=None) if words else None
