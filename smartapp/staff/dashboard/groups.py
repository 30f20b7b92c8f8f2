"""Dashboard figures split by group, small cells suppressed: acceptance by race, ethnicity,
sex and age group (equity), and handoffs linked per catalog program (pure)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from smartapp.staff.dashboard.formatting import percent, rate
from smartapp.staff.dashboard.suppression import Row, suppress
from smartapp.staff.dashboard.visits import PatientKey, Visit

NOT_RECORDED = "Not recorded"
OTHER_PROGRAM = "Other"
UNNAMED_PROGRAM = "Program not named"
DIMENSIONS = (
    ("race", "Race"),
    ("ethnicity", "Ethnicity"),
    ("sex", "Sex"),
    ("age_group", "Age group"),
)
# Natural orders where there is one; other values follow by size, "Not recorded" last.
ORDER = {
    "age_group": ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"),
    "sex": ("female", "male", "other", "unknown"),
}
# Administrative sex codes (FHIR) as words.
LABELS = {"sex": {"female": "Female", "male": "Male", "other": "Other", "unknown": "Unknown"}}
EQUITY_COLUMNS = ("visits", "decided", "accepted", "declined")


def _ordered(dimension: str, values: dict[str, int]) -> list[str]:
    natural = ORDER.get(dimension, ())
    known = [v for v in natural if v in values]
    rest = sorted(
        (v for v in values if v not in natural and v != NOT_RECORDED),
        key=lambda v: (-values[v], v),
    )
    return known + rest + ([NOT_RECORDED] if NOT_RECORDED in values else [])


def _add(row: Row, column: str, n: int, patient: PatientKey) -> None:
    """Add `n` to a figure and, if n > 0, the patient to those behind it (the row's own set,
    changed in place: linear in the visits)."""
    count, patients = row[column]
    if n:
        patients.add(patient)
    row[column] = (count + n, patients)


def _equity_groups(visits: Sequence[Visit], name: str) -> dict[str, Row]:
    """Visits, decided, accepted and declined items per value of one dimension."""
    groups: dict[str, Row] = {}
    for visit in visits:
        value = visit.demographics.get(name) or NOT_RECORDED
        row = groups.setdefault(value, {c: (0, set()) for c in EQUITY_COLUMNS})
        accepted = visit.accepted
        _add(row, "visits", 1, visit.patient)
        _add(row, "decided", len(visit.decisions), visit.patient)
        _add(row, "accepted", accepted, visit.patient)
        _add(row, "declined", len(visit.decisions) - accepted, visit.patient)
    return groups


def _equity_row(name: str, value: str, shown: dict[str, dict]) -> dict:
    """One group's row: its cells and its acceptance, shown only where both parts are."""
    acceptance: float | None
    if shown["accepted"]["suppressed"] or shown["decided"]["suppressed"]:
        acceptance, text = None, "suppressed"
    else:
        acceptance = rate(shown["accepted"]["value"], shown["decided"]["value"])
        text = percent(acceptance)
    return {
        "value": LABELS.get(name, {}).get(value, value),
        **shown,
        "acceptance": acceptance,
        "acceptance_text": text,
    }


def equity(visits: Sequence[Visit], min_cell: int) -> list[dict]:
    """Acceptance by race, ethnicity, sex and age group, small cells suppressed."""
    return [
        equity_table(name, label, _equity_groups(visits, name), min_cell)
        for name, label in DIMENSIONS
    ]


def equity_table(name: str, label: str, groups: Mapping[str, Row], min_cell: int) -> dict:
    """One dimension's table from its groups' figures (in Python or added up in SQL)."""
    values = _ordered(name, {v: row["visits"][0] for v, row in groups.items()})
    cells = suppress(
        [groups[v] for v in values],
        EQUITY_COLUMNS,
        min_cell,
        row_sums=(("decided", ("accepted", "declined")),),
    )
    rows = [_equity_row(name, value, shown) for value, shown in zip(values, cells, strict=True)]
    return {"name": name, "label": label, "rows": rows}


def catalog_program(
    text: str | None, programs: Collection[str], ids: Mapping[str, str] | None = None
) -> str:
    """The catalog name a coach's program entry stands for; "Other" for free text.

    A pick from the catalog is stored as "Name (phone)"; a typed entry counts only when it is a
    catalog name (letter case aside). Free text can hold names and phone numbers: never shown.
    A lifecycle update names the program by its catalog id (`ids`: id -> name), bare or as
    `HealthcareService/<id>`.
    """
    text = (text or "").strip()
    if not text:
        return UNNAMED_PROGRAM
    if ids:
        found = ids.get(text.removeprefix("HealthcareService/"))
        if found:
            return found
    folded = text.casefold()
    for name in programs:
        if folded == name.casefold() or folded.startswith(name.casefold() + " ("):
            return name
    return OTHER_PROGRAM


def program_name(visit: Visit, by_length: Sequence[str], ids: Mapping[str, str] | None) -> str:
    """The catalog name of the program a visit was linked to: the first of its entries the
    catalog knows; "Other" if none does (free text is never shown); unnamed if none given."""
    return entries_program(visit.program_entries, by_length, ids)


def entries_program(
    entries: Sequence[str], by_length: Sequence[str], ids: Mapping[str, str] | None
) -> str:
    """`program_name` from a visit's program entries (most telling first)."""
    for text in entries:
        name = catalog_program(text, by_length, ids)
        if name != OTHER_PROGRAM:
            return name
    return OTHER_PROGRAM if entries else UNNAMED_PROGRAM


def linked_programs(
    visits: Sequence[Visit],
    min_cell: int,
    programs: Collection[str],
    ids: Mapping[str, str] | None = None,
) -> list[dict]:
    """Handoffs linked per catalog program (free text as "Other"), small cells suppressed."""
    by_length = sorted(programs, key=len, reverse=True)  # "Bridge Clinic East" before "Bridge.."
    groups: dict[str, Row] = {}
    for visit in visits:
        if visit.coach_referral and visit.linked:
            name = program_name(visit, by_length, ids)
            _add(groups.setdefault(name, {"linked": (0, set())}), "linked", 1, visit.patient)
    return linked_table(groups, min_cell)


def linked_table(groups: Mapping[str, Row], min_cell: int) -> list[dict]:
    """The linked-per-program table from its groups' figures, small cells suppressed."""
    names = sorted(groups, key=lambda n: (-groups[n]["linked"][0], n))
    cells = suppress([groups[n] for n in names], ("linked",), min_cell)
    return [{"program": n, "linked": c["linked"]} for n, c in zip(names, cells, strict=True)]
