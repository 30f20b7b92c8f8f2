"""The dashboard's times from ED arrival in the database: medians and percentiles read at the
few ranks they need by OFFSET along an index on (coach or handoff, minutes, first shown), and
interpolated as `statistics` does (`figures.distribution`, `outcomes.spread`, exactly).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import Integer, func, literal, select, union_all
from sqlalchemy.orm import Session

from smartapp.staff.dashboard.figures import BUCKETS
from smartapp.staff.dashboard.outcomes import (
    TIMES,
)
from smartapp.staff.dashboard.sums import BOUNDS, OUTCOME_SPANS, F, Sums, Where


def _median(n: int, at: Mapping[int, float]) -> float:
    """`statistics.median` of n sorted values known at the ranks it reads."""
    if n % 2 == 1:
        return at[n // 2]
    return (at[n // 2 - 1] + at[n // 2]) / 2


def _quantile(n: int, at: Mapping[int, float], i: int, parts: int) -> float:
    """The i-th of `statistics.quantiles(method="inclusive", n=parts)` of n > 1 sorted values,
    from the two values it interpolates between."""
    j, delta = divmod(i * (n - 1), parts)
    return (at[j] * (parts - delta) + at[j + 1] * delta) / parts


def _median_ranks(n: int) -> set[int]:
    return {n // 2} if n % 2 else {n // 2 - 1, n // 2}


def _quantile_ranks(n: int, i: int, parts: int) -> set[int]:
    if n < 2:
        return {0}
    j = i * (n - 1) // parts
    return {j, j + 1}


def _spread_ranks(n: int) -> set[int]:
    return _median_ranks(n) | _quantile_ranks(n, 9, 10)


def _at_ranks(
    session: Session, value: Any, where: Where, ranks: Collection[int]
) -> dict[int, float]:
    """The values (minutes, 0 and over) at these 0-based ranks in sorted order, read with
    OFFSET along the index on (coach or handoff, minutes, first shown), no sort: two next
    ranks in one read (the smaller value is the first rank's, the larger the second's)."""
    wanted = sorted(set(ranks))
    starts: list[tuple[int, int]] = []  # (rank, how many ranks from it)
    covered: set[int] = set()
    for rank in wanted:
        if rank not in covered:
            count = 2 if rank + 1 in wanted else 1
            starts.append((rank, count))
            covered.update(range(rank, rank + count))
    parts = [
        select(value.label("v"))
        .where(*where, value >= 0)
        .order_by(value)
        .limit(count)
        .offset(rank)
        .subquery()
        for rank, count in starts
    ]
    query = union_all(
        *(
            select(literal(rank, Integer), func.min(p.c.v), func.max(p.c.v))
            for (rank, _), p in zip(starts, parts, strict=True)
        )
    )
    count_of = dict(starts)
    out: dict[int, float] = {}
    for rank, low, high in session.execute(query):
        if low is None:
            continue
        out[int(rank)] = float(low)
        if count_of[int(rank)] == 2:
            out[int(rank) + 1] = float(high)
    return out


def _distribution(session: Session, where: Where, sums: Sums, column: str, min_cell: int) -> dict:
    """`figures.distribution` of a time from arrival over the period's coach referrals."""
    n = sums[f"{column}_n"]
    below = [sums[f"{column}_{high}"] for high in BOUNDS]
    counts = [b - a for a, b in zip([0, *below], [*below, n], strict=True)]
    shown = n >= min_cell
    median = p25 = p75 = None
    if shown:
        coach = [*where, F.c.coach == 1]
        ranks = _median_ranks(n) | (_quantile_ranks(n, 1, 4) | _quantile_ranks(n, 3, 4))
        ranked = _at_ranks(session, F.c[column], coach, ranks)
        median = _median(n, ranked)
        if n > 1:
            p25, p75 = _quantile(n, ranked, 1, 4), _quantile(n, ranked, 3, 4)
        else:
            p25 = p75 = ranked[0]
    return {
        "n": n,
        "suppressed": bool(n) and not shown,
        "median": median,
        "p25": p25,
        "p75": p75,
        "buckets": [
            {"label": label, "count": count if shown else None}
            for (_, label), count in zip(BUCKETS, counts, strict=True)
        ],
    }


def _spread(n: int, at: Mapping[int, float], min_cell: int) -> dict:
    """`outcomes.spread` of n values known at the ranks it reads."""
    shown = n >= min_cell and n > 0
    return {
        "n": n,
        "suppressed": bool(n) and not shown,
        "median": _median(n, at) if shown else None,
        "p90": (_quantile(n, at, 9, 10) if n > 1 else at[0]) if shown else None,
    }


def coach_times(session: Session, where: Where, sums: Sums, min_cell: int) -> dict:
    """Times from ED arrival to coach referral and to coach contact (`figures.times`)."""
    referrals = sums["coach"]
    return {
        "referral": _distribution(session, where, sums, "to_decision", min_cell),
        "contact": _distribution(session, where, sums, "to_contact", min_cell),
        "coach_referrals": referrals,
        "no_arrival_time": referrals - sums["coach_arrival"],
        "not_contacted": referrals - sums["contacted"],
        "negative": sums["to_decision_negative"] + sums["to_contact_negative"],
    }


def outcome_times(session: Session, where: Where, sums: Sums, min_cell: int) -> dict:
    """`outcomes.outcome_times`: arrival to first contact, scheduled, attended."""
    handoffs = [*where, F.c.handoff == 1]
    out: dict = {"no_arrival_time": sums["handoff_no_arrival"]}
    for name, attribute in TIMES:
        column = OUTCOME_SPANS[attribute]
        n = sums[f"{column}_n"]
        at: Mapping[int, float] = {}
        if n >= min_cell:
            at = _at_ranks(session, F.c[column], handoffs, _spread_ranks(n))
        out[name] = _spread(n, at, min_cell) | {"negative": sums[f"{column}_negative"]}
    return out
