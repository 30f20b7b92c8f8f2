"""Rows read by Core and given as detached instances of the models, all their columns
loaded: what `session.get` and a query give after the session ends (`expire_on_commit` off),
for about half the CPU. Every screen, Sign and signed page reads its launch and its visit's
referral so (issue 15)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, bindparam, inspect, select
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state

from smartapp.db import Base

M = TypeVar("M", bound=Base)
N = TypeVar("N", bound=Base)


class DetachedReader(Generic[M]):
    """One row of a mapped class read by Core and given as a detached instance, all its
    columns loaded: what `session.get` and a query give after the session ends
    (`expire_on_commit` off), for about half the CPU. Every screen, Sign and signed page
    reads its launch and its visit's referral so. Built once, with the keys it selects by."""

    def __init__(self, model: type[M], *by: str) -> None:
        attributes = list(inspect(model).column_attrs)
        self.model = model
        self.keys = tuple(attribute.key for attribute in attributes)
        self._manager = inspect(model).class_manager
        self.statement = select(*(attribute.columns[0] for attribute in attributes)).where(
            *(inspect(model).columns[key] == bindparam(key) for key in by)
        )

    def one(self, connection: Connection, **by: object) -> M | None:
        """The instance whose columns `by` name have these values, or None."""
        row = connection.execute(self.statement, by).first()
        return None if row is None else self.detached(row)

    def detached(self, row: Sequence[Any]) -> M:
        """The instance of a row of this reader's columns, as loaded: made as the ORM's loader
        makes one (no constructor, no attribute events: a third of the read's CPU), its
        columns put in its state, then given its identity with no pending change."""
        instance = cast(M, self._manager.new_instance())
        instance_state(instance).dict.update(zip(self.keys, row, strict=True))
        make_transient_to_detached(instance)
        return instance


class DetachedJoinReader(Generic[M, N]):
    """One row of `model` and the row of `joined` it meets (LEFT OUTER JOIN on `on`), read by
    Core in one statement and given as detached instances (`DetachedReader`); None for a
    `joined` row that is not there. Built once, with the keys of `model` it selects by."""

    def __init__(self, model: type[M], joined: type[N], on: Any, *by: str) -> None:
        self.left = DetachedReader(model, *by)
        self.right = DetachedReader(joined)
        self.statement = self.left.statement.add_columns(
            *self.right.statement.selected_columns
        ).outerjoin_from(inspect(model).local_table, inspect(joined).local_table, on)
        self._split = len(self.left.keys)
        self._right_key = self.right.keys.index(inspect(joined).primary_key[0].key)

    def one(self, connection: Connection, **by: object) -> tuple[M | None, N | None]:
        """The instance whose columns `by` name have these values and its joined one."""
        row = connection.execute(self.statement, by).first()
        if row is None:
            return None, None
        left, right = row[: self._split], row[self._split :]
        joined = self.right.detached(right) if right[self._right_key] is not None else None
        return self.left.detached(left), joined
