"""What became of the handoffs after the ED (issue 11): linked, first appointment attended,
engaged at 30 days, and the times from ED arrival; overall, per program and per partner (pure).

Unit: a *handoff* is a visit whose signed decision accepted the coach consult, or whose referral
the lifecycle followed (a `handoff-status`, `followup-*` or `consent-recorded` event names it: a
referral sent to a partner without a coach). Each counts once, in the period of its visit,
whenever its outcome was reported. A step once reached stays reached (a Task cancelled after
the first appointment still had its appointment).

- linked: confirmed by the partner (a partner's `handoff-status` reporting the first appointment
  scheduled or attended, engaged at 30 days, or the Task completed) or else by the coach (a
  `coach-link`, a `coach-close` "Linked to a program", or such a step reported by a coach or
  other Handoff staff). Where both confirmed, it counts as confirmed by the partner; the two
  add up to the linked. A partner *accepting* a referral is not a link.
- first appointment attended: business status `appointment-attended` or later (`engaged-30-days`)
  reported by anyone.
- engaged at 30 days: business status `engaged-30-days`, or a `followup-outcome` at day 30 of
  `in-treatment` or `attending`.
- times from ED arrival (the encounter start the screen showed, as in `figures`): to the first
  contact (`coach-contact`, a `contacted` step by anyone, or a follow-up attempt that reached the
  patient), to the first appointment scheduled and to the first appointment attended. A step
  reported later counts at the `at` its event carries. Median and 90th percentile, only over
  `min_cell` handoffs or more; spans before arrival are counted apart, not summarised.
- per program (the catalog's name; a coach's free text as "Other") and per partner (its name;
  the partner of the linked catalog program where no update named one): every count suppressed
  as the equity tables are ("<k", then "*" so that no hidden figure can be worked out from a
  row's linked = by partner + by coach, nor from a column's total shown in the headline).

No coach, physician or partner user is named: only program and partner organisation names.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from smartapp.staff.dashboard.formatting import rate
from smartapp.staff.dashboard.groups import OTHER_PROGRAM, UNNAMED_PROGRAM, program_name
from smartapp.staff.dashboard.suppression import Row, suppress
from smartapp.staff.dashboard.visits import PARTNER, PatientKey, Visit

OUTCOME_COLUMNS = ("linked", "by_partner", "by_coach", "attended", "engaged")
# linked = by partner + by coach, within every row.
OUTCOME_ROW_SUMS = (("linked", ("by_partner", "by_coach")),)
NO_PARTNER = "No partner named"
OTHER_PARTNER = "Other partner"
LAST_PROGRAMS = (OTHER_PROGRAM, UNNAMED_PROGRAM)
# The times from arrival: (figure, the Visit attribute holding the step's time).
TIMES = (
    ("first_contact", "first_contact_at"),
    ("scheduled", "scheduled_at"),
    ("attended", "attended_at"),
)


@dataclass(frozen=True)
class Directory:
    """The only program and partner names the dashboard may show, from the catalog and the
    partners' data: a lifecycle update names a program or partner by id."""

    programs: Mapping[str, str] = field(default_factory=dict)  # catalog program id -> name
    partners: Mapping[str, str] = field(default_factory=dict)  # partner id -> organisation name
    partner_of: Mapping[str, str] = field(default_factory=dict)  # program name -> partner id


def spread(minutes: Sequence[float], min_cell: int) -> dict:
    """n, median and 90th percentile of durations in minutes; the summary only over `min_cell`
    values or more (fewer would be a few patients' own times)."""
    shown = len(minutes) >= min_cell and bool(minutes)
    p90: float | None = None
    if shown:
        ordered = sorted(minutes)
        p90 = (
            statistics.quantiles(ordered, n=10, method="inclusive")[8]
            if len(ordered) > 1
            else ordered[0]
        )
    return {
        "n": len(minutes),
        "suppressed": bool(minutes) and not shown,
        "median": statistics.median(minutes) if shown else None,
        "p90": p90,
    }


def _span(arrival: datetime | None, later: datetime | None) -> float | None:
    """Minutes from arrival to a later step; None where either time is unknown."""
    if arrival is None or later is None:
        return None
    return (later - arrival).total_seconds() / 60


def outcome_totals(handoffs: Sequence[Visit]) -> dict:
    """The period's outcome figures over its handoffs (the totals the tables add up to)."""
    n = len(handoffs)
    by_partner = sum(1 for v in handoffs if v.linked_by == PARTNER)
    linked = sum(1 for v in handoffs if v.linked)
    attended = sum(1 for v in handoffs if v.attended)
    engaged = sum(1 for v in handoffs if v.engaged)
    contacted = sum(1 for v in handoffs if v.first_contact_at is not None)
    return totals_of(n, contacted, linked, by_partner, attended, engaged)


def totals_of(
    n: int, contacted: int, linked: int, by_partner: int, attended: int, engaged: int
) -> dict:
    """The outcome totals from their counts (over visits here, in SQL by the aggregate)."""
    return {
        "handoffs": n,
        "contacted": contacted,
        "linked": linked,
        "by_partner": by_partner,
        "by_coach": linked - by_partner,
        "attended": attended,
        "engaged": engaged,
        "linked_rate": rate(linked, n),
        "attended_rate": rate(attended, n),
        "engaged_rate": rate(engaged, n),
    }


def outcome_times(handoffs: Sequence[Visit], min_cell: int) -> dict:
    """Arrival to first contact, to first appointment scheduled and attended (median, p90)."""
    out: dict = {"no_arrival_time": sum(1 for v in handoffs if v.arrival is None)}
    for name, attribute in TIMES:
        spans = [_span(v.arrival, getattr(v, attribute)) for v in handoffs]
        known = [m for m in spans if m is not None]
        out[name] = spread([m for m in known if m >= 0], min_cell) | {
            "negative": sum(1 for m in known if m < 0)
        }
    return out


def _count(row: Row, column: str, patient: PatientKey) -> None:
    """One more handoff in a figure, its patient among those behind it (set changed in place)."""
    count, patients = row[column]
    patients.add(patient)
    row[column] = (count + 1, patients)


def _flags(visit: Visit) -> dict[str, bool]:
    """Which of the table's figures a handoff counts in."""
    return {
        "linked": visit.linked,
        "by_partner": visit.linked_by == PARTNER,
        "by_coach": visit.linked_by == "coach",
        "attended": visit.attended,
        "engaged": visit.engaged,
    }


def _tally(
    handoffs: Sequence[Visit], label_of: Callable[[Visit], tuple[str, str]]
) -> tuple[dict[tuple[str, str], Row], dict[tuple[str, str], list[float]]]:
    """Per (partner, program): the outcome figures, and the minutes from arrival to the first
    appointment attended. Only handoffs with an outcome; each in exactly one group."""
    groups: dict[tuple[str, str], Row] = {}
    to_attended: dict[tuple[str, str], list[float]] = {}
    for visit in handoffs:
        flags = _flags(visit)
        if not (flags["linked"] or flags["attended"] or flags["engaged"]):
            continue
        label = label_of(visit)
        row = groups.setdefault(label, _empty())
        for column, counted in flags.items():
            if counted:
                _count(row, column, visit.patient)
        span = _span(visit.arrival, visit.attended_at)
        if span is not None and span >= 0:
            to_attended.setdefault(label, []).append(span)
    return groups, to_attended


def _empty() -> Row:
    return {c: (0, set()) for c in OUTCOME_COLUMNS}


def _subtotal(rows: Sequence[Row]) -> Row:
    """A partner's row: its programs' figures added (patients united; linear in the rows)."""
    total = _empty()
    for row in rows:
        for column in OUTCOME_COLUMNS:
            count, patients = total[column]
            patients |= row[column][1]
            total[column] = (count + row[column][0], patients)
    return total


def _ordered(rows: Mapping[str, Row], last: Collection[str]) -> list[str]:
    """Most linked first, ties by name, the catch-all rows at the end."""
    return sorted(rows, key=lambda n: (n in last, -rows[n]["linked"][0], n))


def outcome_table(
    handoffs: Sequence[Visit],
    label_of: Callable[[Visit], tuple[str, str]],
    min_cell: int,
) -> list[dict]:
    """Outcome figures per partner, and per program within each partner, every count
    small-cell suppressed.

    Every handoff with an outcome falls in exactly one (partner, program) row; a partner's row
    adds up its programs' rows; the partners' rows, and all the program rows, add up to the
    headline totals. Complementary suppression runs along each of those sums, and along
    linked = by partner + by coach within every row, so no hidden figure can be worked out;
    where a row's linked is hidden, so are its zeros (none attended, none engaged), which would
    tell what every patient of that small group did not do.
    """
    groups, to_attended = _tally(handoffs, label_of)
    programs = by_partner(groups)
    subtotals = {p: _subtotal(list(rows.values())) for p, rows in programs.items()}
    per_partner: dict[str, list[float]] = {}
    for (partner, _), spans in to_attended.items():
        per_partner.setdefault(partner, []).extend(spans)

    def spread_of(partner: str, program: str | None) -> dict:
        if program is None:
            return spread(per_partner.get(partner, []), min_cell)
        return spread(to_attended.get((partner, program), []), min_cell)

    return suppressed_table(programs, subtotals, min_cell, spread_of)


def by_partner(groups: Mapping[tuple[str, str], Row]) -> dict[str, dict[str, Row]]:
    """(partner, program) rows as partner -> program -> row."""
    programs: dict[str, dict[str, Row]] = {}
    for (partner, program), row in groups.items():
        programs.setdefault(partner, {})[program] = row
    return programs


def suppressed_table(
    programs: Mapping[str, Mapping[str, Row]],
    subtotals: Mapping[str, Row],
    min_cell: int,
    spread_of: Callable[[str, str | None], dict],
) -> list[dict]:
    """The outcome table from its rows' figures (per partner, and per program within it),
    suppressed along every public sum (see `outcome_table`); `spread_of(partner, program or
    None)`: the row's times to the first appointment attended."""
    partners = _ordered(subtotals, (OTHER_PARTNER, NO_PARTNER))
    table: list[Row] = []
    places: list[tuple[str, str | None]] = []
    families: list[list[int]] = []  # a partner's row, then its programs' rows
    for partner in partners:
        families.append([len(table)])
        table.append(subtotals[partner])
        places.append((partner, None))
        rows = programs[partner]
        for name in _ordered(rows, LAST_PROGRAMS):
            families[-1].append(len(table))
            table.append(rows[name])
            places.append((partner, name))
    heads = [family[0] for family in families]
    members = [i for family in families for i in family[1:]]
    cells = suppress(
        table,
        OUTCOME_COLUMNS,
        min_cell,
        OUTCOME_ROW_SUMS,
        column_totals=False,
        row_groups=[heads, members, *families],
        zeros=True,
        zeros_with=(("linked", ("attended", "engaged")),),
    )
    out: list[dict] = []
    for (partner, program), shown in zip(places, cells, strict=True):
        if program is None:
            out.append({"name": partner, **shown, "to_attended": spread_of(partner, None)})
            out[-1]["programs"] = []
        else:
            out[-1]["programs"].append(
                {"name": program, **shown, "to_attended": spread_of(partner, program)}
            )
    return out


def partner_name(found: str | None, directory: Directory) -> str:
    """The partner row a handoff counts in: its partner's name ("Other partner" for one the
    partner data does not know; "No partner named" for none)."""
    if found is None:
        return NO_PARTNER
    return directory.partners.get(found.removeprefix("Organization/"), OTHER_PARTNER)


def outcomes(
    visits: Sequence[Visit], min_cell: int, programs: Collection[str], directory: Directory
) -> dict:
    """Every outcome figure of the period's visits: totals, times, per program, per partner."""
    handoffs = [v for v in visits if v.handoff]
    by_length = sorted(programs, key=len, reverse=True)  # "Bridge Clinic East" before "Bridge.."

    def program(visit: Visit) -> str:
        return program_name(visit, by_length, directory.programs)

    def partner(visit: Visit) -> str:
        return partner_name(visit.partner or directory.partner_of.get(program(visit)), directory)

    return {
        "totals": outcome_totals(handoffs),
        "times": outcome_times(handoffs, min_cell),
        "partners": outcome_table(handoffs, lambda v: (partner(v), program(v)), min_cell),
    }
