"""The backtest's text report: a readable rendering of ``backtest_report.report``'s output,
one section per function (header, counts table, during the visits, by year, differences)."""

from __future__ import annotations

from typing import Any

#: Width of the label column and of each pack's column in the counts tables.
LABEL = 44
CELL = 24
EMPTY_COUNTS: dict[str, Any] = {"visits": 0, "variants": {}, "cautions": {}}


def _variant_label(kind: str, variant: str | None) -> str:
    return f"{kind} [{variant}]" if variant else kind


def _skipped_lines(skipped: list[dict[str, str]]) -> list[str]:
    """What the text report says about files left out because they are not FHIR."""
    if not skipped:
        return []
    head = "1 file" if len(skipped) == 1 else f"{len(skipped)} files"
    if len(skipped) == 1:
        return [f"skipped {head} that is not FHIR: {skipped[0]['path']} ({_why(skipped[0])})"]
    return [f"skipped {head} that are not FHIR:"] + [f"  {s['path']} ({_why(s)})" for s in skipped]


def _why(skipped: dict[str, str]) -> str:
    return skipped["reason"].removeprefix("not FHIR: ")


def _row(label: str, values: list[Any]) -> str:
    """One table row: the label, then one right-aligned cell per pack."""
    return f"{label:<{LABEL}}" + "".join(f"{v:>{CELL}}" for v in values)


def _header_lines(data: dict[str, Any], seconds: float | None) -> list[str]:
    """What was read, with which packs, and how many patients and visits."""
    base, other = data["pack"], data["compare"]
    inp = data["input"]
    files = ", ".join(
        f"{n} {what}"
        for what, n in (
            ("bundle files", inp["bundle_files"]),
            ("NDJSON files", inp["ndjson_files"]),
        )
        if n
    )
    took = f" in {seconds:.2f} s" if seconds is not None else ""
    lines = [
        f"backtest of {inp['path']} ({files}), {data['workers']} worker(s){took}",
        *_skipped_lines(inp.get("skipped_files", [])),
        f"pack     {base['id']} {base['version']} ({base['hash'][:19]})",
    ]
    if other:
        lines.append(f"compare  {other['id']} {other['version']} ({other['hash'][:19]})")
    lines += [
        f"patients {data['patients']} read, {data['patients_with_visits']} with ED visits",
        f"visits   {data['visits']} ED visits replayed"
        + (f", {data['visits_skipped']} skipped (no time)" if data["visits_skipped"] else ""),
        "",
    ]
    return lines


def _count_lines(packs: list[dict[str, Any]], kinds: list[str]) -> list[str]:
    """The table of kinds (with variants and cautions) suggested at the replay time."""
    header = f"{'suggestion':<{LABEL}}" + "".join(f"{p['id'][:22]:>{CELL}}" for p in packs)
    lines = [
        header,
        f"{'':<{LABEL}}" + "".join(f"{p['version'][:22]:>{CELL}}" for p in packs),
        "-" * len(header),
        _row("visits with any suggestion", [p["visits_with_suggestions"] for p in packs]),
    ]
    for kind in kinds:
        cells = [p["counts"].get(kind, EMPTY_COUNTS) for p in packs]
        lines.append(_row(kind, [c["visits"] for c in cells]))
        for part in ("variants", "cautions"):
            names = list(dict.fromkeys(n for c in cells for n in c[part]))
            for name in names:
                label = f"  {'variant' if part == 'variants' else 'caution'} {name}"
                lines.append(_row(label, [c[part].get(name, 0) for c in cells]))
    return lines


def _during_lines(data: dict[str, Any], packs: list[dict[str, Any]], kinds: list[str]) -> list[str]:
    """Kinds suggested at any moment of the visit, and visits that lost one by discharge."""
    lines = ["", "suggested at any moment of the visit (arrival, each change, discharge):"]
    lines.append(
        _row("visits with any suggestion", [p["during"]["visits_with_suggestions"] for p in packs])
    )
    for kind in kinds:
        cells = [p["during"]["counts"].get(kind, {"visits": 0}) for p in packs]
        lines.append(_row(kind, [c["visits"] for c in cells]))
    earlier = _suggested_before_discharge(data.get("per_visit", []))
    if earlier:
        base = data["pack"]
        lines += [
            "",
            f"{len(earlier)} visit(s) where a kind was suggested during the visit "
            f"but not at discharge ({base['id']}):",
        ]
        lines += [f"  {line}" for line in earlier[:20]]
        if len(earlier) > 20:
            lines.append(f"  ... and {len(earlier) - 20} more (see --json per_visit)")
    return lines


def _year_lines(data: dict[str, Any]) -> list[str]:
    """ED visits and the base pack's suggestions per year of the replay time."""
    base = data["pack"]
    lines = ["", f"by year (replay time): ED visits, then suggestions ({base['id']})"]
    for year, visits in data["visits_by_year"].items():
        counts = base["by_year"].get(year, {}).get("counts", {})
        parts = []
        for kind, c in counts.items():
            if not c["visits"]:
                continue
            variants = [f"{v} {n}" for v, n in c["variants"].items() if n]
            parts.append(
                f"{kind} {c['visits']}" + (f" ({', '.join(variants)})" if variants else "")
            )
        lines.append(f"  {year}  {visits:>4} visits   " + ("; ".join(parts) or "-"))
    return lines


def _difference_lines(base: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The visits where the compared pack's outcome differs, with what differs."""
    diffs = other["differences"]
    lines = [
        "",
        f"{len(diffs)} visit(s) with different suggestions "
        f"({base['id']} {base['version']} -> {other['id']} {other['version']}):",
    ]
    for d in diffs:
        lines.append(
            f"  visit {d['visit']}  patient {d['patient']}  {d['time']}"
            + (f"  (first differs at {d['moment']})" if d.get("moment") else "")
        )
        for s in d["added"]:
            lines.append(
                f"    + {_variant_label(s['kind'], s['variant'])}"
                + (f" cautions {s['cautions']}" if s["cautions"] else "")
            )
        for s in d["removed"]:
            lines.append(f"    - {_variant_label(s['kind'], s['variant'])}")
        for c in d["changed"]:
            a, b = c["before"], c["after"]
            for part in ("variant", "cautions", "evidence"):
                if a[part] != b[part]:
                    lines.append(f"    ~ {c['kind']}: {part} {a[part]} -> {b[part]}")
        for w in d.get("withheld", []):
            lines.append(f"    ! {w['kind']} withheld: {w['before']} -> {w['after']}")
    return lines


def render_text(data: dict[str, Any], seconds: float | None = None) -> str:
    """A readable rendering of :func:`report`'s output."""
    base, other = data["pack"], data["compare"]
    packs = [base] + ([other] if other else [])
    kinds = list(base["counts"]) + [
        k for k in (other or {}).get("counts", {}) if k not in base["counts"]
    ]
    lines = _header_lines(data, seconds)
    lines += _count_lines(packs, kinds)
    lines += _during_lines(data, packs, kinds)
    lines += _year_lines(data)
    if other is not None:
        lines += _difference_lines(base, other)
    return "\n".join(lines)


def _suggested_before_discharge(visits: list[dict[str, Any]]) -> list[str]:
    """Lines for visits where the base pack suggested a kind at some moment but not at
    the replay time (it was shown during the visit, then no longer)."""
    out = []
    for v in visits:
        base = v["packs"][0]
        gone = [k for k in base["first_suggested"] if k not in base["at_replay_time"]]
        for kind in gone:
            out.append(
                f"visit {v['visit']}  patient {v['patient']}  {kind} from "
                f"{base['first_suggested'][kind]}, not at {v['time']}"
                + (
                    f" (withheld: {', '.join(base['withheld'][kind])})"
                    if kind in base["withheld"]
                    else ""
                )
            )
    return out
