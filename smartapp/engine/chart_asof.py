"""A chart as it stood at a time (``Chart.as_of``): a filtering view over the full chart's
indexes, with what the views of one chart share computed once (``History``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from . import asof
from .chart import Chart
from .chart_types import ChartEntry, ValueSetLike

T = TypeVar("T")
#: Not worked out yet (None is an answer: no time).
_UNKNOWN: Any = object()


class History:
    """What as-of views of one chart need, computed lazily and shared by all views."""

    def __init__(self, chart: Chart) -> None:
        self._entries = chart._entries
        self._appears: dict[str, datetime | None] = {}
        self._changes: dict[str, datetime | None] = {}
        self._earlier: dict[str, ChartEntry] = {}

    def appears(self, entry: ChartEntry) -> datetime | None:
        """When the entry's resource entered the chart (see asof.appears_at)."""
        key = entry.key
        found = self._appears.get(key, _UNKNOWN)
        if found is not _UNKNOWN:
            return found
        resource = entry.resource
        if resource["resourceType"] == "Encounter":  # its start, parsed already, else its end
            found = entry.time if entry.time is not None else asof.encounter_appears(resource)
        else:
            start = None
            if entry.encounter is not None:
                target = self._entries.get(entry.encounter)
                if target is not None and target.resource["resourceType"] == "Encounter":
                    start = self.appears(target)
            found = asof.appears_at(resource, start)
        self._appears[key] = found
        return found

    def change(self, entry: ChartEntry) -> datetime | None:
        """When the entry's resource took its recorded form (see asof.change_time)."""
        key = entry.key
        found = self._changes.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = self._changes[key] = asof.change_time(entry.resource)
        return found

    def then(self, entry: ChartEntry, time: datetime) -> ChartEntry:
        """The entry as it stood at ``time``: its earlier form before its change time."""
        when = self.change(entry)
        if when is None or time >= when:
            return entry
        earlier = self._earlier.get(entry.key)
        if earlier is None:
            earlier = self._earlier[entry.key] = revised(entry, asof.earlier_form(entry.resource))
        return earlier


def revised(entry: ChartEntry, resource: dict[str, Any]) -> ChartEntry:
    """The entry with another version of its resource (same code, time and encounter)."""
    return ChartEntry(entry.key, resource, entry.codes, entry.time, entry.encounter)


class ChartAsOf(Chart):
    """A chart as it stood at a time: a filtering view of a full chart (see Chart.as_of)."""

    def __init__(self, base: Chart, history: History, time: datetime, current: str | None) -> None:
        # Chart.__init__ is not called: queries are answered from the base's indexes.
        self._base = base
        self._hist = history
        self._time = time
        self._current: ChartEntry | None = None
        key = base.resolve(asof.encounter_key(current)) if current else None
        if key is not None and key.startswith("Encounter/"):
            entry = base._entries[key]
            self._current = revised(entry, asof.in_progress(entry.resource))
        self._members = {}
        self._history = history

    def _visible(self, entry: ChartEntry) -> bool:
        appears = self._hist.appears(entry)
        return appears is None or appears <= self._time

    def _then(self, entry: ChartEntry) -> ChartEntry:
        current = self._current
        if current is not None and entry.key == current.key:
            return current
        return self._hist.then(entry, self._time)

    def _cut(self, entries: Iterable[ChartEntry]) -> tuple[ChartEntry, ...]:
        return tuple(self._then(e) for e in entries if self._visible(e))

    def __len__(self) -> int:
        return sum(1 for e in self._base._entries.values() if self._visible(e))

    def resolve(self, reference: str) -> str | None:
        key = self._base.resolve(reference)
        return key if key is not None and self._visible(self._base._entries[key]) else None

    def get(self, reference: str) -> dict[str, Any] | None:
        key = self.resolve(reference)
        return self._then(self._base._entries[key]).resource if key else None

    def entry(self, key: str) -> ChartEntry | None:
        found = self._base._entries.get(key)
        return self._then(found) if found is not None and self._visible(found) else None

    def of_all(self) -> tuple[ChartEntry, ...]:
        return self._cut(self._base._entries.values())

    def of_type(self, resource_type: str) -> tuple[ChartEntry, ...]:
        return self._cut(self._base.of_type(resource_type))

    def with_code(self, system: str, code: str) -> tuple[ChartEntry, ...]:
        return self._cut(self._base.with_code(system, code))

    def with_element(self, resource_type: str, element: str) -> tuple[ChartEntry, ...]:
        return self._cut(self._base.with_element(resource_type, element))

    def codes_in_system(self, system: str) -> frozenset[str]:
        return frozenset(
            code
            for code in self._base.codes_in_system(system)
            if any(self._visible(e) for e in self._base.with_code(system, code))
        )

    @property
    def patient(self) -> dict[str, Any] | None:
        patients = self.of_type("Patient")
        return patients[0].resource if patients else None

    def members(self, valueset: ValueSetLike) -> tuple[ChartEntry, ...]:
        # memoised per view, as the full chart does: facts ask for one value set often
        cached = self._members.get(id(valueset))
        if cached is not None and cached[0] is valueset:
            return cached[1]
        found = self._cut(self._base.members(valueset))
        self._members[id(valueset)] = (valueset, found)
        return found

    def reason_codes(self, key: str) -> tuple[tuple[str, str], ...]:
        return self._base.reason_codes(key)

    def reason_members(self, valueset: ValueSetLike) -> tuple[ChartEntry, ...]:
        return self._cut(self._base.reason_members(valueset))

    def derived(self, owner: Any, build: Callable[[Chart], T]) -> T:
        return self._base.derived(owner, build)

    def shown(self, entries: tuple[ChartEntry, ...]) -> tuple[ChartEntry, ...]:
        return self._cut(entries)

    def as_of(self, time: datetime, current_encounter: str | None = None) -> Chart:
        raise TypeError("a chart as of a time is a view: call as_of on the full chart")

    def appears_at(self, key: str) -> datetime | None:
        return self._base.appears_at(key)

    def changes_at(self, key: str) -> datetime | None:
        return self._base.changes_at(key)

    def times_of(
        self, keys: Iterable[str]
    ) -> Iterator[tuple[str, datetime | None, datetime | None]]:
        return self._base.times_of(keys)

    def full_urls(self) -> dict[str, list[str]]:
        keys = {e.key for e in self.of_all()}
        return {k: v for k, v in self._base.full_urls().items() if k in keys}
