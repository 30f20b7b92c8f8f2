"""Small-cell suppression of dashboard tables, primary ("<k") and complementary ("*").

Pure. A figure with 1 to `min_cell - 1` distinct patients behind it is hidden; then, wherever
exactly one term of a public sum is hidden, the smallest other non-zero term is hidden too, until
no hidden figure can be recovered by subtraction. Suppressed figures leave as text only.
"""

from __future__ import annotations

from collections.abc import Sequence

SMALL, COMPLEMENT = "small", "complement"
COMPLEMENT_MARK = "*"

# A table row: column -> (count, the patients behind it).
Figure = tuple[int, set]
Row = dict[str, Figure]
Place = tuple[int, str]  # (row index, column)
RowSums = Sequence[tuple[str, Sequence[str]]]


def cell(count: int, min_cell: int, hidden: str | None = None) -> dict:
    """A figure as the page may show it: the number, or only a mark when suppressed ("<k":
    fewer than k patients behind it; "*": hidden so that a "<k" cannot be worked out)."""
    if hidden == SMALL:
        return {"value": None, "text": f"<{min_cell}", "suppressed": True}
    if hidden == COMPLEMENT:
        return {"value": None, "text": COMPLEMENT_MARK, "suppressed": True}
    return {"value": count, "text": str(count), "suppressed": False}


def _small_cells(table: Sequence[Row], columns: Sequence[str], min_cell: int) -> dict[Place, str]:
    """Primary suppression: the figures with 1..min_cell-1 patients behind them."""
    return {
        (i, c): SMALL
        for i, row in enumerate(table)
        for c in columns
        if 0 < len(row[c][1]) < min_cell
    }


def _hide_complement(
    table: Sequence[Row], hidden: dict[Place, str], group: list[Place], zeros: bool = False
) -> bool:
    """If exactly one term of a public sum is hidden, hide the smallest other non-zero term
    (with `zeros`, where every other term is 0, one of those zeros: the sum alone would tell
    the hidden term); whether anything changed."""
    inside = [g for g in group if g in hidden]
    visible = [g for g in group if g not in hidden]
    others = [g for g in visible if table[g[0]][g[1]][0] > 0] or (visible if zeros else [])
    if len(inside) != 1 or not others:
        return False
    hidden[min(others, key=lambda g: (table[g[0]][g[1]][0], g))] = COMPLEMENT
    return True


def _hide_row_sums(
    table: Sequence[Row], hidden: dict[Place, str], i: int, row_sums: RowSums
) -> bool:
    """One pass over row `i`'s sums: a hidden total hides all its parts; a lone hidden term
    hides a complement. Whether anything changed."""
    changed = False
    for total, parts in row_sums:
        if (i, total) in hidden:
            for part in parts:
                if (i, part) not in hidden:
                    hidden[(i, part)] = COMPLEMENT
                    changed = True
        changed |= _hide_complement(table, hidden, [(i, total), *((i, p) for p in parts)])
    return changed


def _hide_zeros_with(
    table: Sequence[Row], hidden: dict[Place, str], i: int, zeros_with: RowSums
) -> bool:
    """Where row `i`'s total is hidden, hide the 0s of the columns that go with it."""
    changed = False
    for total, columns in zeros_with:
        if (i, total) not in hidden:
            continue
        for column in columns:
            if (i, column) not in hidden and table[i][column][0] == 0:
                hidden[(i, column)] = COMPLEMENT
                changed = True
    return changed


def suppress(
    table: list[dict[str, tuple[int, set]]],
    columns: Sequence[str],
    min_cell: int,
    row_sums: RowSums = (),
    column_totals: bool = True,
    row_groups: Sequence[Sequence[int]] = (),
    zeros: bool = False,
    zeros_with: RowSums = (),
) -> list[dict[str, dict]]:
    """Small-cell suppression of a table of (count, patients) figures; returns cells.

    Primary: 1..min_cell-1 patients behind a figure. Complementary, repeated until nothing
    changes, for each sum whose total is public (`row_sums`: a total column = the sum of part
    columns within a row; with `column_totals`, each column over all rows, whose total the
    page shows elsewhere): if exactly one term is hidden, the smallest other non-zero term is
    hidden too. Where a row's total is hidden, its parts are all hidden, zeros included (a
    visible 0 next to a hidden total would tell what every patient of a small group did).
    `row_groups`: more sums down the columns, as row indexes whose figures are tied by a public
    sum (a subtotal row with the rows it adds up; rows adding up to a total shown elsewhere);
    each is treated as the column totals are (give `column_totals=False` where the rows of the
    table do not, all together, add up to one public total). With `zeros`, a lone hidden term
    of a sum down the columns whose other terms are all 0 hides one of those zeros too (else
    the public total would be the hidden figure). `zeros_with`: (a total column, columns
    counting some of the same patients, not parts of a sum): where the row's total is hidden,
    a 0 in those columns is hidden too, as a part's would be.
    """
    hidden = _small_cells(table, columns, min_cell)
    changed = True
    while changed:
        changed = False
        for i in range(len(table)):
            changed |= _hide_row_sums(table, hidden, i, row_sums)
            changed |= _hide_zeros_with(table, hidden, i, zeros_with)
        groups = [range(len(table))] if column_totals else []
        for rows in [*groups, *row_groups]:
            for c in columns:
                changed |= _hide_complement(table, hidden, [(i, c) for i in rows], zeros)
    return [
        {c: cell(row[c][0], min_cell, hidden.get((i, c))) for c in columns}
        for i, row in enumerate(table)
    ]
