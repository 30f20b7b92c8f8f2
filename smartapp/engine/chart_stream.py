"""A chart built as its resources are read, one at a time (a bulk export's patient).

``Chart.from_items(items, keep=keep)`` holds every resource until the chart is built. A
:class:`ChartStream` is fed the same items in the same order and gives the same chart, or
raises the same error, but decides at once what ``keep`` leaves out: such a resource is
checked as it comes (its key, a second version of it, whose it is) and then held only as
its line as read (with ``reread``), so the memory of a patient's many unread resources
(vital signs, most labs) is freed while it is still in the processor's caches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .chart import ALWAYS_KEPT, Chart, ChartError, KeepCodes
from .chart_input import check_outcome, key_of
from .fhir import coding_tuple

#: Reads a resource again from what it was read from (``orjson.loads``).
Reread = Callable[[Any], dict[str, Any]]
#: Types :meth:`ChartStream.add_read` leaves to :meth:`ChartStream.add` (kept whatever
#: their codes, or not a resource of the chart).
_ADDED = ALWAYS_KEPT | {"OperationOutcome"}


class ChartStream:
    """``Chart.from_items`` of the items fed by :meth:`add` (none with a fullUrl)."""

    __slots__ = ("_concept", "_error", "_keep", "_keyed", "_left", "_owners", "_reread")

    def __init__(self, keep: KeepCodes | None = None, reread: Reread | None = None) -> None:
        self._keep = keep
        self._reread = reread
        self._keyed: dict[str, tuple[dict[str, Any], str]] = {}
        #: what ``keep`` left out: key -> its content as read (its line, or the resource)
        self._left: dict[str, Any] = {}
        #: the references the left-out resources' ``subject`` and ``patient`` hold
        self._owners: set[str] = set()
        self._error: ChartError | None = None
        #: ``keep`` of a resource's ``code`` (without making its codes' tuple, when it can)
        self._concept: Callable[[Any], bool] | None = None
        if keep is not None:
            self._concept = getattr(keep, "concept", None) or (
                lambda concept: keep(coding_tuple(concept) if concept else ())
            )

    def add(self, resource: dict[str, Any], where: str, raw: Any = None) -> None:
        """One checked resource (``resourceType`` a string), read at ``where`` from ``raw``
        (kept instead of the resource when it is left out and ``reread`` was given). The
        first error is raised by :meth:`chart`, as ``from_items`` would raise it."""
        if self._error is not None:
            return  # from_items stops at the first error
        keyed = self._keyed
        try:
            rtype = resource["resourceType"]
            if rtype == "OperationOutcome":
                check_outcome(resource, where)
                return
            rid = resource.get("id")
            key = f"{rtype}/{rid}" if rid else key_of(resource, None, where)
            prior = keyed.get(key)
            if prior is not None:
                if prior[0] is not resource and prior[0] != resource:
                    raise ChartError(f"{where}: {key} appears twice with different content")
                return
            if key in self._left:
                if not self._same(self._left[key], resource, raw):
                    raise ChartError(f"{where}: {key} appears twice with different content")
                return
        except ChartError as error:
            self._error = error
            return
        keep = self._keep
        if keep is None or rtype in ALWAYS_KEPT:
            keyed[key] = (resource, where)
            return
        concept = resource.get("code")
        if keep(coding_tuple(concept) if concept else ()):
            keyed[key] = (resource, where)
            return
        self._left[key] = raw if raw is not None and self._reread is not None else resource
        for element in ("subject", "patient"):  # whose it is: Chart.indexed reads them
            value = resource.get(element)
            if value.__class__ is dict:
                reference = value.get("reference")
                if reference.__class__ is str:
                    self._owners.add(reference)

    def add_read(
        self,
        resource: dict[str, Any],
        rtype: str,
        key: str,
        raw: Any,
        subject: str,
        prefix: str,
        offset: int,
    ) -> None:
        """:meth:`add` of a resource whose reader checked it already: ``rtype`` its
        ``resourceType`` and ``key`` ``rtype/id`` (both non-empty strings), ``subject`` its
        ``subject.reference`` (a string); read at ``f"{prefix}{offset}"`` (its ``where``,
        made only when it is kept or named: most lines of a population are neither)."""
        keyed, left = self._keyed, self._left
        if self._error is not None or key in keyed or key in left:
            self.add(resource, f"{prefix}{offset}", raw)
            return
        if rtype in ALWAYS_KEPT:  # (an Encounter, most of the lines read) as add keeps it
            keyed[key] = (resource, f"{prefix}{offset}")
            return
        if rtype in _ADDED or self._concept is None:
            self.add(resource, f"{prefix}{offset}", raw)
            return
        if self._concept(resource.get("code")):
            keyed[key] = (resource, f"{prefix}{offset}")
            return
        left[key] = raw if raw is not None and self._reread is not None else resource
        self._owners.add(subject)
        if "patient" in resource:
            value = resource["patient"]
            if value.__class__ is dict:
                reference = value.get("reference")
                if reference.__class__ is str:
                    self._owners.add(reference)

    def add_unread(self, rtype: str, key: str, raw: Any, subject: str, patient: Any) -> bool:
        """Leave out, without reading it, a resource whose reader took from its line only
        its type and ``key`` (``rtype/id``, both non-empty strings), and the references of
        its ``subject`` (a string) and ``patient`` (kept when a string), and found that
        ``keep`` leaves its ``code`` out (:meth:`keeps_coding`, else ``keep`` of its codes),
        as :meth:`add_read` would leave it out. False when this stream must read it (a type
        always kept, a key that came before, an error before it, no ``keep`` or
        ``reread``): the caller parses it and calls :meth:`add_read`."""
        left = self._left
        if (
            rtype in _ADDED
            or self._reread is None
            or self._keep is None
            or self._error is not None
            or key in left
            or key in self._keyed
        ):
            return False
        left[key] = raw
        owners = self._owners
        owners.add(subject)
        if patient.__class__ is str:
            owners.add(patient)
        return True

    def _same(self, earlier: Any, resource: dict[str, Any], raw: Any) -> bool:
        """Whether a second version of a left-out key has the first one's content."""
        if isinstance(earlier, dict):
            return earlier is resource or earlier == resource
        if raw is not None and earlier == raw:
            return True
        assert self._reread is not None  # content is a line only with a reread
        return self._reread(earlier) == resource

    def chart(self) -> Chart:
        """The chart (ChartError, MultiplePatientsError among them, as from_items)."""
        if self._error is not None:
            raise self._error
        keyed, left = self._keyed, self._left
        self._keyed, self._left = {}, {}  # what was left out is let go with the chart
        return Chart.indexed(keyed, {}, keep=self._keep, decided=left, owners=self._owners)
