"""Pass 2 of a population's backtest (see ``backtest_ndjson``): one bucket's patients.

A bucket's lines are read at their offsets, parsed and checked, and grouped by the
patient ``patient_of`` gives, in the order of the files and lines they came from, as
``split_by_patient`` groups them, so the charts and the report are the in-memory ones.
Each patient's lines go straight into a :class:`~smartapp.engine.chart_stream.ChartStream`
(what the packs' rules never read is left out as it is read, most of it skimmed rather
than parsed: ``backtest_skim``), and its chart is what ``charts_of`` would build from the
same items: a patient whose chart names another patient is read again, as items, and
split as ``charts_of`` splits it.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from typing import Any, cast

import orjson

from smartapp.engine.chart import (
    ALWAYS_KEPT,
    Chart,
    ChartError,
    ChartItem,
    KeepCodes,
    MultiplePatientsError,
    resource_key,
)
from smartapp.engine.chart_stream import ChartStream
from smartapp.rulestools.backtest_files import opened_file, read_at
from smartapp.rulestools.backtest_input import BacktestError, charts_of, ndjson_resource
from smartapp.rulestools.backtest_ndjson import (
    ENTRY,
    ENTRY_BYTES,
    Misplaced,
    Population,
    _owner,
    index_path,
    tag_of,
)
from smartapp.rulestools.backtest_skim import (
    SKIM_ERRORS,
    codes_of_head,
    read_head,
)

#: A bucket's chunks with lines in it: the open data file (``read_at``), how its lines are
#: named, entries, and whether its lines are skimmed first (``backtest_skim``: not a file of
#: a type whose resources are always read).
Tables = list[tuple[int, str, "array[int]", bool]]


def _entries(pop: Population, chunk: int, bucket: int) -> array[int]:
    starts = pop.starts[chunk]
    first, end = starts[bucket], starts[bucket + 1]
    entries: array[int] = array("q")
    if end > first:  # (os calls: a bucket reads a slice of most chunks' index files)
        fd = os.open(index_path(pop.folder, chunk), os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, (end - first) * ENTRY_BYTES, first * ENTRY_BYTES)
        finally:
            os.close(fd)
        if len(data) != (end - first) * ENTRY_BYTES:
            raise EOFError(f"{index_path(pop.folder, chunk)}: the index is shorter than written")
        entries.frombytes(data)
    return entries


def _bucket_tags(pop: Population, bucket: int) -> tuple[Tables, dict[int, list[int]]]:
    """The bucket's chunks, and each tag's runs of lines: (table, entry) after each other."""
    tables: Tables = []
    order: dict[int, list[int]] = {}
    for chunk in pop.chunks:
        entries = _entries(pop, chunk.index, bucket)
        if not entries:
            continue
        table = len(tables)
        fd = opened_file(pop.data[chunk.file])
        path = pop.paths[chunk.file]
        skim = path.name.split(".")[0] not in _READ_TYPES
        tables.append((fd, f"{path}:@", entries, skim))
        for at in range(0, len(entries), ENTRY):
            tag = entries[at + 2]
            lines = order.get(tag)
            if lines is None:
                order[tag] = [table, at]
            else:
                lines.append(table)
                lines.append(at)
    return tables, order


def bucket_groups(pop: Population, bucket: int) -> Iterator[list[ChartItem]]:
    """Pass 2: one bucket's patients (as ``split_by_patient`` groups them), each with the
    Medications about no patient, read and parsed a tag at a time (so a patient's
    resources are parsed just before its chart is built, and freed after: the memory
    stays in the processor's caches). BacktestError at a malformed line; Misplaced when
    a line is about a patient of another tag than its hint's."""
    tables, order = _bucket_tags(pop, bucket)
    for tag, lines in order.items():
        yield from _tag_groups(tables, tag, lines, pop.shared).values()


class PatientCharts:
    """One patient of a bucket, read: its chart(s) and how an error names it."""

    def __init__(self, stream: _Patient, again: _Again, keep: KeepCodes | None) -> None:
        self._stream = stream
        self._again = again
        self._keep = keep
        self.source = stream.source()

    def charts(self) -> Iterator[Chart]:
        """``charts_of`` of the patient's items (BacktestError naming ``source``)."""
        try:
            chart = self._stream.chart()
        except MultiplePatientsError:
            items = self._again.groups()[self._stream.owner]
            yield from charts_of(items, self.source, self._keep)
            return
        except ChartError as exc:
            raise BacktestError(f"{self.source}: {exc}") from exc
        yield chart


def bucket_charts(pop: Population, bucket: int, keep: KeepCodes | None) -> Iterator[PatientCharts]:
    """Pass 2 as charts: one bucket's patients in ``bucket_groups``' order, each read into
    a chart as its lines are parsed (the same charts, and errors, as ``charts_of`` of
    ``bucket_groups``; use each before taking the next)."""
    tables, order = _bucket_tags(pop, bucket)
    for tag, lines in order.items():
        again = _Again(tables, tag, lines, pop.shared)
        for stream in _tag_streams(tables, tag, lines, pop.shared, keep):
            yield PatientCharts(stream, again, keep)


class _Again:
    """A tag's lines read again as items (a patient whose chart names another patient)."""

    def __init__(self, tables: Tables, tag: int, lines: list[int], shared: list[ChartItem]):
        self.args = (tables, tag, lines, shared)
        self._groups: dict[str, list[ChartItem]] | None = None

    def groups(self) -> dict[str, list[ChartItem]]:
        if self._groups is None:
            self._groups = _tag_groups(*self.args)
        return self._groups


def _tag_groups(
    tables: Tables, tag: int, lines: list[int], shared: list[ChartItem]
) -> dict[str, list[ChartItem]]:
    """The patients of one tag's runs of lines (in the order of the files and lines)."""
    place = _Placer(tag)
    by_ref = place.by_ref
    loads = orjson.loads
    for at in range(0, len(lines), 2):
        fd, prefix, entries, _skim = tables[lines[at]]
        entry = lines[at + 1]
        offset = entries[entry]
        for line in read_at(fd, offset, entries[entry + 1]).split(b"\n"):
            where = f"{prefix}{offset}"
            offset += len(line) + 1
            # the common line, checked inline: a resource with a string id, not a
            # Patient, whose subject's reference names a patient of this tag already seen
            try:
                resource = loads(line)
                group = by_ref[resource["subject"]["reference"]]
                rtype, rid = resource["resourceType"], resource["id"]
                if rtype.__class__ is not str or rid.__class__ is not str or not rid:
                    raise TypeError
                if rtype in _CHECKED:
                    raise KeyError
            except (ValueError, KeyError, TypeError):
                place.checked(line, where)
                continue
            group.append((None, resource, where))
    for group in place.groups.values():
        group.extend(shared)
    return place.groups


def _tag_streams(
    tables: Tables,
    tag: int,
    lines: list[int],
    shared: list[ChartItem],
    keep: KeepCodes | None,
) -> list[_Patient]:
    """``_tag_groups``, each patient's lines fed to its chart as they are parsed; a line of
    a file whose type a chart may leave out is skimmed first (``backtest_skim``), and left
    out without being parsed when its chart would leave it out."""
    place = _StreamPlacer(tag, keep)
    by_ref = place.by_ref
    loads = orjson.loads
    # a coding's answer, memoised (CodedIn), asked without making the tuple of codes
    keeps_coding = getattr(keep, "keeps_coding", None)
    for at in range(0, len(lines), 2):
        fd, prefix, entries, skim = tables[lines[at]]
        skim = skim and keep is not None
        entry = lines[at + 1]
        offset = entries[entry]
        for line in read_at(fd, offset, entries[entry + 1]).split(b"\n"):
            line_at = offset  # (not `at`: the outer loop's index)
            offset += len(line) + 1
            if skim and line.isascii():  # most are lines no rule reads: left out unparsed
                try:
                    head = read_head(line)
                    subject = head.subject.reference  # type: ignore[union-attr]
                    rtype, rid = head.resourceType, head.id
                    if (
                        rtype.__class__ is str
                        and rid.__class__ is str
                        and rid
                        and rtype not in _CHECKED
                    ):
                        coding = head.code.coding if head.code is not None else None
                        if coding and len(coding) == 1 and keeps_coding is not None:
                            system, code = coding[0].system, coding[0].code
                            kept = (
                                system.__class__ is str
                                and code.__class__ is str
                                and keeps_coding(system, code)
                            )
                        else:
                            kept = keep(codes_of_head(head))  # type: ignore[misc]
                        other = head.patient
                        if not kept and by_ref[subject].add_unread(
                            rtype,
                            f"{rtype}/{rid}",
                            line,
                            subject,
                            None if other is None else other.reference,
                        ):
                            continue
                except SKIM_ERRORS:
                    pass  # read in full, as every other line
            try:  # the common line, as in _tag_groups
                resource = loads(line)
                subject = resource["subject"]["reference"]
                patient = by_ref[subject]
                rtype, rid = resource["resourceType"], resource["id"]
                if rtype.__class__ is not str or rid.__class__ is not str or not rid:
                    raise TypeError
                if rtype in _CHECKED:
                    raise KeyError
            except (ValueError, KeyError, TypeError):
                place.checked(line, f"{prefix}{line_at}")
                continue
            patient.add_read(resource, rtype, f"{rtype}/{rid}", line, subject, prefix, line_at)
    patients = list(place.groups.values())
    for patient in patients:
        for _url, resource, where in shared:
            patient.add(resource, where)
    return patients


#: Resource types whose lines take the checked way (as ``ndjson_resource``, ``patient_of``).
_CHECKED = frozenset({"", "Bundle", "Patient"})
#: Types whose files' lines are parsed at once (a chart reads every one of them).
_READ_TYPES = _CHECKED | ALWAYS_KEPT


class _Placer:
    """A bucket's lines grouped by patient, each line checked as the in-memory reading
    checks it (``ndjson_resource``, ``split_by_patient``'s keys, ``patient_of``)."""

    def __init__(self, tag: int) -> None:
        self.tag = tag
        self.groups: dict[str, list[ChartItem]] = {}
        self.refs: dict[str, str | None] = {}  # reference -> the patient it names
        #: a subject's reference -> its patient's group (the patient is of this bucket)
        self.by_ref: dict[str, list[ChartItem]] = {}

    def checked(self, line: bytes, where: str) -> None:
        resource = ndjson_resource(line, where)
        if resource is None:
            return  # a blank line in a run: left out, as everywhere
        item: ChartItem = (None, resource, where)
        if not resource.get("id"):
            resource_key(resource, None, where)  # ChartError, as split_by_patient
        owner = _owner(item, self.refs)
        if owner is None or tag_of(owner) != self.tag:
            raise Misplaced(f"{where}: about {owner}, not a patient of tag {self.tag}")
        group = self.groups.get(owner)
        if group is None:
            group = self.groups[owner] = []
        group.append(item)
        subject = resource.get("subject")
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if isinstance(ref, str) and self.refs.get(ref) == owner:
            self.by_ref[ref] = group


class _Patient(ChartStream):
    """A patient's chart as its lines come, with how an error names it (its first Patient
    line, else its first line)."""

    __slots__ = ("first", "owner", "patient")

    def __init__(self, owner: str, keep: KeepCodes | None) -> None:
        super().__init__(keep, _reread)
        self.owner = owner
        self.first = ""
        self.patient = ""

    def source(self) -> str:
        return self.patient or self.first


def _reread(line: bytes) -> dict[str, Any]:
    """A left-out line read again (a second version of its key came). ChartError when
    orjson refuses it: a skimmed line with a number too large for a float (see
    ``backtest_skim``); the backtest then names the first malformed line."""
    try:
        return cast(dict[str, Any], orjson.loads(line))
    except orjson.JSONDecodeError as exc:
        raise ChartError(f"a resource read before is not valid JSON: {exc}") from exc


class _StreamPlacer:
    """``_Placer``, each patient's lines fed to a :class:`_Patient`."""

    def __init__(self, tag: int, keep: KeepCodes | None) -> None:
        self.tag = tag
        self.keep = keep
        self.groups: dict[str, _Patient] = {}
        self.refs: dict[str, str | None] = {}
        self.by_ref: dict[str, _Patient] = {}

    def checked(self, line: bytes, where: str) -> None:
        resource = ndjson_resource(line, where)
        if resource is None:
            return
        item: ChartItem = (None, resource, where)
        if not resource.get("id"):
            resource_key(resource, None, where)
        owner = _owner(item, self.refs)
        if owner is None or tag_of(owner) != self.tag:
            raise Misplaced(f"{where}: about {owner}, not a patient of tag {self.tag}")
        patient = self.groups.get(owner)
        if patient is None:
            patient = self.groups[owner] = _Patient(owner, self.keep)
            patient.first = where
        if not patient.patient and resource["resourceType"] == "Patient":
            patient.patient = f"{where} (Patient/{resource.get('id')})"
        patient.add(resource, where, line)
        subject = resource.get("subject")
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if isinstance(ref, str) and self.refs.get(ref) == owner:
            self.by_ref[ref] = patient
