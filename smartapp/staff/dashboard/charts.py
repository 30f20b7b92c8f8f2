"""SVG chart geometry for the dashboard, from plain (already suppressed) numbers.

No script and no inline style: the templates draw these shapes with classes only, so the CSP
stays `script-src 'self'; style-src 'self'`; each chart has a data table as its text alternative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

# Chart widths in CSS pixels: drawn at the size they are shown (text stays 12-13 px), scaled
# down only on narrow screens.
FULL, HALF = 1170, 560

Series = Sequence[tuple[str, str, Sequence[float | None]]]


def nice_scale(largest: float, ticks: int = 4) -> tuple[float, float]:
    """(top, step) of a count axis from 0 that shows `largest`: whole, round steps (1, 2, 5 x
    10^n), about `ticks` of them."""
    if largest <= 0:
        return 1.0, 1.0
    raw = largest / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = max(1.0, next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))
    return math.ceil(largest / step) * step, step


def _axis_ticks(top: float, plot_h: float, top_value: float, step: float) -> list[dict]:
    """The count axis's tick marks, from 0 to the top of the scale."""
    ticks = []
    k = 0.0
    while k <= top_value + 1e-9:
        ticks.append({"y": round(top + plot_h - plot_h * k / top_value, 1), "label": _number(k)})
        k += step
    return ticks


def column_chart(
    chart_id: str,
    title: str,
    categories: Sequence[tuple[str, str]],
    series: Series,
    *,
    width: int = FULL,
    height: int = 250,
) -> dict:
    """Grouped vertical bars: categories (label, second line) x series (name, css, values)."""
    left, right, top, bottom = 44, 8, 14, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, _, vs in series for v in vs if v is not None]
    top_value, step = nice_scale(max(values, default=0))
    band = plot_w / max(len(categories), 1)
    bar_w = band * 0.76 / max(len(series), 1)
    bars = []
    for i, (label, sub) in enumerate(categories):
        for j, (name, css, vs) in enumerate(series):
            value = vs[i]
            if value is None:
                continue
            h = plot_h * value / top_value
            bars.append(
                {
                    "x": round(left + i * band + band * 0.12 + j * bar_w, 1),
                    "y": round(top + plot_h - h, 1),
                    "w": round(bar_w - 1, 1),
                    "h": round(h, 1),
                    "css": css,
                    "title": f"{label} {sub}".strip() + f": {name} {_number(value)}",
                }
            )
    return {
        "id": chart_id,
        "title": title,
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "base": top + plot_h,
        "bars": bars,
        "ticks": _axis_ticks(top, plot_h, top_value, step),
        "labels": [
            {"x": round(left + (i + 0.5) * band, 1), "text": label, "sub": sub}
            for i, (label, sub) in enumerate(categories)
        ],
        "legend": [{"name": name, "css": css} for name, css, _ in series],
        "y_label": height - bottom + 17,
        "y_sub": height - bottom + 32,
    }


def bar_chart(
    chart_id: str,
    title: str,
    rows: Sequence[tuple[str, float | None, str]],
    *,
    css: str = "s0",
    maximum: float | None = None,
    width: int = FULL,
    label_width: int = 250,
) -> dict:
    """Horizontal bars: (label, value or None when suppressed, value as text); with a fixed
    `maximum` (a share: 1.0) each bar sits on a track showing the whole."""
    row_h, top = 26, 6
    values = [v for _, v, _ in rows if v is not None]
    top_value = maximum or max(values, default=0) or 1
    span = width - label_width - 90
    bars = []
    for i, (label, value, text) in enumerate(rows):
        y = top + i * row_h
        w = 0.0 if value is None else max(span * value / top_value, 1.0 if value else 0.0)
        bars.append(
            {
                "label": label,
                "y": y,
                "w": round(w, 1),
                "text": text,
                "text_x": round(label_width + (span if maximum else w) + 6, 1),
                "suppressed": value is None,
                "css": css,
            }
        )
    return {
        "id": chart_id,
        "title": title,
        "width": width,
        "height": top * 2 + row_h * len(rows),
        "label_width": label_width,
        "row_h": row_h,
        "span": span,
        "track": maximum is not None,
        "bars": bars,
    }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


# -- the dashboard's charts -------------------------------------------------------------------


def _weekly_charts(weeks: Sequence[dict]) -> dict[str, dict]:
    """Suggestions and coach handoffs by ISO week."""
    categories = [
        (w["week"].split("-")[1], datetime.fromisoformat(w["monday"]).strftime("%d %b"))
        for w in weeks
    ]
    return {
        "weekly": column_chart(
            "weekly",
            "Suggestions shown, accepted and declined, by ISO week",
            categories,
            [
                ("Shown", "s0", [w["suggestions"] for w in weeks]),
                ("Accepted", "s1", [w["accepted"] for w in weeks]),
                ("Declined", "s2", [w["declined"] for w in weeks]),
            ],
        ),
        "coach": column_chart(
            "coach",
            "Coach referrals, contacts and program links, by ISO week",
            categories,
            [
                ("Coach referrals", "s0", [w["coach_referrals"] for w in weeks]),
                ("Contacted", "s3", [w["contacted"] for w in weeks]),
                ("Linked to a program", "s1", [w["linked"] for w in weeks]),
            ],
        ),
    }


def _times_chart(times: dict) -> dict:
    """The time-from-arrival histograms, side by side."""
    buckets = [b["label"] for b in times["referral"]["buckets"]]
    return column_chart(
        "times",
        "Time from ED arrival to coach referral and to coach contact",
        [(label, "") for label in buckets],
        [
            ("To referral", "s0", [b["count"] for b in times["referral"]["buckets"]]),
            ("To contact", "s3", [b["count"] for b in times["contact"]["buckets"]]),
        ],
        width=HALF,
        height=230,
    )


def _equity_chart(dimension: dict) -> dict:
    """Acceptance by one demographic dimension, as shares on a track (suppressed: no bar)."""
    return bar_chart(
        f"equity-{dimension['name']}",
        f"Acceptance by {dimension['label'].lower()}",
        [(row["value"], row["acceptance"], row["acceptance_text"]) for row in dimension["rows"]],
        css="s1",
        maximum=1.0,
        width=HALF,
        label_width=240,
    )


def dashboard_charts(figures: dict) -> dict[str, dict]:
    """The SVG geometry of every chart, from the (already suppressed) figures."""
    charts = _weekly_charts(figures["weeks"])
    charts["reasons"] = bar_chart(
        "reasons",
        "Decline reasons",
        [(r["reason"], r["count"], str(r["count"])) for r in figures["decline_reasons"]],
        css="s2",
        width=HALF,
        label_width=220,
    )
    charts["rules"] = bar_chart(
        "rules",
        "Visits in which each rule fired",
        [(r["rule"], r["fired"], str(r["fired"])) for r in figures["rules"]],
        css="s0",
    )
    charts["times"] = _times_chart(figures["times"])
    for dimension in figures["equity"]:
        charts[f"equity-{dimension['name']}"] = _equity_chart(dimension)
    return charts


def outcome_chart(outcomes: dict) -> dict:
    """What became of the handoffs, as shares of them on a track (issue 11's outcomes). Kept
    apart from `dashboard_charts`: the page asks for it beside the others."""
    totals = outcomes["totals"]
    whole = totals["handoffs"]
    steps = (
        ("Contacted", totals["contacted"]),
        ("Linked to a program", totals["linked"]),
        ("… confirmed by the partner", totals["by_partner"]),
        ("First appointment attended", totals["attended"]),
        ("Engaged at 30 days", totals["engaged"]),
    )
    return bar_chart(
        "outcomes",
        "What became of the handoffs, as a share of them",
        [
            (
                label,
                n / whole if whole else None,
                f"{n} ({round(100 * n / whole)}%)" if whole else "—",
            )
            for label, n in steps
        ],
        css="s1",
        maximum=1.0,
        width=HALF,
        label_width=230,
    )
