"""The write plan: what the outbox will do for one signed referral, as a typed object.

A plan is a list of operations in write order. Each operation is one resource: created at the
EHR (POST), updated there (PUT, the coach's Task changes), or kept in Handoff's own store where
the EHR cannot take it. The plan also says how the EHR takes the creates (its profile): one
transaction, one by one with conditional create, or one by one with a search by Handoff's
identifier first. `to_json`/`from_json` are the only way a plan becomes the referral row's JSON
column and back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from smartapp.jsonio import read_json, write_json
from smartapp.writeback.profiles import WriteProfile


class Mode(StrEnum):
    """Where a resource goes."""

    REST = "rest"  # to the EHR over its FHIR API
    LOCAL = "local"  # kept in Handoff (the referral log and the coach worklist show it)


class Method(StrEnum):
    CREATE = "POST"
    UPDATE = "PUT"


class Status(StrEnum):
    PENDING = "pending"  # to write
    WRITTEN = "written"  # the EHR holds it
    KEPT = "kept"  # stays in Handoff


class Delivery(StrEnum):
    """How the creates reach the EHR (from the profile)."""

    TRANSACTION = "transaction"  # one Bundle of conditional creates, all or nothing
    CONDITIONAL_CREATE = "conditional-create"  # one by one, If-None-Exist
    SEARCH_FIRST = "search-first"  # one by one, a search by identifier before each create


@dataclass
class Operation:
    """One resource of the plan and where its write stands."""

    key: str  # Handoff's stable identifier value (also the `urn:uuid:` of references to it)
    type: str
    mode: Mode
    resource: dict[str, Any]
    status: Status
    conditional: str | None = None  # the query that finds it at the EHR (identifier or _tag)
    method: Method = Method.CREATE
    id: str | None = None  # the EHR's id once written
    http: str | None = None  # the EHR's answer to the write
    unanswered_at: str | None = None  # when a create got no answer in time (ISO time)
    # A change after the first writes (a follow-up: see WritePlan.add_update):
    version: str | None = None  # the EHR's versionId of what this write produced
    of: str | None = None  # an update: the key of the created resource it changes
    changes: dict[str, Any] | None = None  # an update: our change, the only fields it sets
    about: list[str] | None = None  # a Provenance of updates: the keys of those updates

    @property
    def full_url(self) -> str:
        return f"urn:uuid:{self.key}"

    @property
    def is_follow_up(self) -> bool:
        """An update, or the Provenance of updates: written after the first writes, in order."""
        return self.method == Method.UPDATE or self.about is not None

    @property
    def is_rest_create(self) -> bool:
        return self.mode == Mode.REST and self.method == Method.CREATE and not self.is_follow_up

    @property
    def is_pending_update(self) -> bool:
        rest_update = self.mode == Mode.REST and self.method == Method.UPDATE
        return rest_update and self.status != Status.WRITTEN

    def mark_written(self, server_id: str, http: str) -> None:
        self.id, self.http, self.status = server_id, http, Status.WRITTEN
        self.unanswered_at = None

    def keep_in_handoff(self) -> None:
        self.mode, self.status = Mode.LOCAL, Status.KEPT

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "key": self.key,
            "type": self.type,
            "mode": self.mode.value,
            "method": self.method.value,
            "conditional": self.conditional,
            "resource": self.resource,
            "status": self.status.value,
            "id": self.id,
        }
        if self.http is not None:
            data["http"] = self.http
        if self.unanswered_at is not None:
            data["unanswered_at"] = self.unanswered_at
        for name in ("version", "of", "changes", "about"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        return cls(
            key=data["key"],
            type=data["type"],
            mode=Mode(data["mode"]),
            resource=data["resource"],
            status=Status(data["status"]),
            conditional=data.get("conditional"),
            method=Method(data.get("method") or Method.CREATE),
            id=data.get("id"),
            http=data.get("http"),
            unanswered_at=data.get("unanswered_at"),
            version=data.get("version"),
            of=data.get("of"),
            changes=data.get("changes"),
            about=data.get("about"),
        )


@dataclass
class WritePlan:
    """Every write of one referral, in order, and how the EHR takes them."""

    profile: str
    transaction: bool
    conditional_create: bool
    order_route: str = "rest"
    operations: list[Operation] = field(default_factory=list)

    @classmethod
    def for_profile(cls, profile: WriteProfile, resources: Iterable[PlannedResource]) -> WritePlan:
        """The plan of `resources` under `profile`: its REST types go to the EHR, the rest
        stays in Handoff."""
        return cls(
            profile=profile.name,
            transaction=profile.transaction,
            conditional_create=profile.conditional_create,
            order_route=profile.order_route,
            operations=[_operation(item, item.type in profile.rest_types) for item in resources],
        )

    @property
    def delivery(self) -> Delivery:
        if self.transaction:
            return Delivery.TRANSACTION
        return Delivery.CONDITIONAL_CREATE if self.conditional_create else Delivery.SEARCH_FIRST

    # -- what the plan holds ---------------------------------------------------------------

    @property
    def has_rest_writes(self) -> bool:
        return any(op.mode == Mode.REST for op in self.operations)

    @property
    def rest_creates(self) -> list[Operation]:
        return [op for op in self.operations if op.is_rest_create]

    @property
    def kept(self) -> list[Operation]:
        """What stays in Handoff because the EHR cannot take it (or was not allowed to)."""
        return [op for op in self.operations if op.mode == Mode.LOCAL]

    @property
    def all_rest_written(self) -> bool:
        return all(op.status == Status.WRITTEN for op in self.operations if op.mode == Mode.REST)

    def task_create(self) -> Operation | None:
        """The coach team's Task as first planned (at the EHR or kept in Handoff)."""
        return self.created("Task")

    def created(self, type_: str) -> Operation | None:
        """The first planned resource of a type (not a follow-up)."""
        return next(
            (
                op
                for op in self.operations
                if op.type == type_ and op.method == Method.CREATE and not op.is_follow_up
            ),
            None,
        )

    def by_key(self, key: str) -> Operation | None:
        return next((op for op in self.operations if op.key == key), None)

    def follow_ups(self) -> list[Operation]:
        """Updates and their Provenances, in the order they were made."""
        return [op for op in self.operations if op.is_follow_up]

    def latest(self, of: Operation) -> Operation:
        """The newest operation on a created resource (its last update queued, else itself)."""
        updates = [op for op in self.operations if op.of == of.key]
        return updates[-1] if updates else of

    # -- changes ---------------------------------------------------------------------------

    def keep_in_handoff_unless(self, may_create: Callable[[str], bool]) -> list[Operation]:
        """Keep in Handoff every REST resource whose type the EHR did not let Handoff create
        (its granted scopes); returns those operations."""
        moved = [op for op in self.operations if op.mode == Mode.REST and not may_create(op.type)]
        for op in moved:
            op.keep_in_handoff()
        return moved

    def add_update(
        self, of: Operation, resource: dict[str, Any], changes: dict[str, Any] | None = None
    ) -> Operation:
        """Queue a PUT of a resource the EHR holds (or will: its create is in the plan), after
        everything planned so far. `changes`: our change alone, re-applied to the EHR's newest
        version if another party changed the resource meanwhile; `resource` is the expected
        result (what Handoff shows)."""
        update = Operation(
            key=f"{of.key}-update-{len(self.operations)}",
            type=of.type,
            mode=Mode.REST,
            method=Method.UPDATE,
            resource=resource,
            status=Status.PENDING,
            id=of.id,
            of=of.key,
            changes=changes,
        )
        self.operations.append(update)
        return update

    def add_follow_up_provenance(
        self, key: str, resource: dict[str, Any], about: list[Operation]
    ) -> Operation:
        """Queue the Provenance of updates (created once: found by its `_tag`, the key)."""
        system = _tag_system(resource)
        provenance = Operation(
            key=key,
            type="Provenance",
            mode=Mode.REST,
            resource=resource,
            status=Status.PENDING,
            conditional=f"_tag={system}|{key}" if system else None,
            about=[op.key for op in about],
        )
        self.operations.append(provenance)
        return provenance

    # -- references between planned resources ----------------------------------------------

    def written_references(self) -> dict[str, str]:
        """`urn:uuid:<key>` -> `Type/<server id>` for every resource the EHR already holds."""
        return {
            op.full_url: f"{op.type}/{op.id}"
            for op in self.operations
            if op.is_rest_create and op.status == Status.WRITTEN and op.id
        }

    def version_references(self) -> dict[str, str]:
        """`urn:uuid:<key>` -> `Type/<id>/_history/<version>` for every follow-up update
        written (what a Provenance of updates targets)."""
        return {
            op.full_url: f"{op.type}/{op.id}/_history/{op.version}"
            if op.version
            else f"{op.type}/{op.id}"
            for op in self.operations
            if op.method == Method.UPDATE and op.status == Status.WRITTEN and op.id
        }

    def local_references(self) -> dict[str, dict[str, Any]]:
        """Logical references (by identifier) to what stays in Handoff, for resources that
        point at it: the EHR cannot resolve a `urn:uuid:` it never received."""
        references = {}
        for op in self.kept:
            ident = (op.resource.get("identifier") or [None])[0]
            display = {"display": f"{op.type} kept in Handoff"}
            references[op.full_url] = display | ({"identifier": ident} if ident else {})
        return references

    # -- the JSON column ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "transaction": self.transaction,
            "conditional_create": self.conditional_create,
            "order_route": self.order_route,
            "operations": [op.to_json() for op in self.operations],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], copy: bool = True) -> WritePlan:
        """A plan from the referral row (a deep copy: editing it leaves the row alone; through
        the JSON columns' own reader and writer, many times faster than copy.deepcopy on a
        plan's resources, and exact where orjson alone is not: integers past 64 bits).
        `copy=False` shares the row's values, for a caller that replaces the row's plan."""
        if copy:
            data = read_json(write_json(data))
        return cls(
            profile=data.get("profile", ""),
            transaction=bool(data.get("transaction", False)),
            conditional_create=bool(data.get("conditional_create", False)),
            order_route=data.get("order_route", "rest"),
            operations=[Operation.from_json(op) for op in data.get("operations", [])],
        )


def _tag_system(resource: dict[str, Any]) -> str | None:
    tags = (resource.get("meta") or {}).get("tag") or [{}]
    return tags[0].get("system")


def as_plan(plan: WritePlan | dict[str, Any]) -> WritePlan:
    """A typed plan from either form (callers that still hold the JSON form)."""
    return plan if isinstance(plan, WritePlan) else WritePlan.from_json(plan)


@dataclass(frozen=True)
class PlannedResource:
    """One resource Handoff will write, with its stable identifier and conditional query."""

    key: str
    resource: dict[str, Any]
    conditional: str

    @property
    def type(self) -> str:
        return str(self.resource["resourceType"])

    @property
    def full_url(self) -> str:
        return f"urn:uuid:{self.key}"


def _operation(item: PlannedResource, rest: bool) -> Operation:
    return Operation(
        key=item.key,
        type=item.type,
        mode=Mode.REST if rest else Mode.LOCAL,
        conditional=item.conditional,
        resource=item.resource,
        status=Status.PENDING if rest else Status.KEPT,
    )


def resolve_references(value: Any, written: dict[str, str], local: dict[str, dict]) -> Any:
    """Swap `urn:uuid:` references for real ones (written) or logical ones (kept in Handoff)."""
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference.startswith("urn:uuid:"):
            if reference in written:
                return value | {"reference": written[reference]}
            if reference in local:
                return {k: v for k, v in value.items() if k != "reference"} | local[reference]
        return {k: resolve_references(v, written, local) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_references(v, written, local) for v in value]
    return value
