"""The loaded catalog as the app sees it: a Program per HealthcareService (built from the
checked resources), and the Catalog that lists and filters them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fhirclient.models.fhirabstractresource import FHIRAbstractResource

from smartapp.catalog.codes import (
    CHARACTERISTIC_SYSTEM,
    RESOURCE_TYPES,
    SERVICE_SYSTEM,
    SERVICE_TYPES,
)
from smartapp.catalog.conventions import _Address, _HealthcareService, _Location, _Organization
from smartapp.catalog.hours import Closure, Window, closures_of, hours_text, is_open, windows_of


@dataclass(frozen=True)
class Program:
    """One HealthcareService as the physician's screen and the referral see it."""

    id: str
    name: str
    organization: str
    organization_id: str
    services: tuple[str, ...]
    service_labels: tuple[str, ...]
    phone: str
    address: str | None
    hours: str
    accepting_new: bool
    telehealth: bool
    walk_in: bool
    same_day_bup: bool
    active: bool
    timezone: str
    comment: str | None = None
    availability_exceptions: str | None = None
    windows: tuple[Window, ...] = field(default=(), repr=False)
    closures: tuple[Closure, ...] = field(default=(), repr=False)
    # The program's consult link (a `url` telecom: its video visit), for telehealth consults.
    video_link: str | None = None

    @property
    def label(self) -> str:
        """The program as a referral names it in words: "name (phone)"."""
        return f"{self.name} ({self.phone})"

    @property
    def call_link(self) -> str:
        """The phone as a tel: link (digits and a leading +)."""
        return "tel:" + "".join(c for c in self.phone if c.isdigit() or c == "+")

    def open_now(self, at: datetime) -> bool:
        """Whether the program is open at ``at`` in the catalog's time zone.

        An aware datetime is converted to the catalog's zone; a naive one is read as catalog
        local time. A ``notAvailable`` closure overrides the weekly hours."""
        return is_open(self.windows, self.closures, self.timezone, at)

    def reference(self) -> dict[str, str]:
        """The FHIR Reference to this program for the ServiceRequest, the Task and the note."""
        return {"reference": f"HealthcareService/{self.id}", "display": self.name}


class Catalog:
    """A validated catalog folder: its programs (HealthcareServices) and the resources behind
    them. Build it with ``load_catalog``."""

    def __init__(
        self,
        folder: Path,
        name: str,
        timezone: str,
        programs: Sequence[Program],
        resources: dict[str, FHIRAbstractResource],
    ) -> None:
        self.folder = folder
        self.name = name
        self.timezone = timezone
        self._programs = {program.id: program for program in programs}
        self._resources = resources

    def programs(
        self,
        service: str | None = None,
        accepting_new: bool | None = None,
        open_at: datetime | None = None,
        telehealth: bool | None = None,
    ) -> list[Program]:
        """Active programs matching every filter given (None: do not filter), sorted by name.

        ``service`` is a code of SERVICE_SYSTEM; an unknown code raises ValueError so a typo in
        the app does not silently show an empty list."""
        if service is not None and service not in SERVICE_TYPES:
            raise ValueError(f"unknown service {service!r} (codes: {', '.join(SERVICE_TYPES)})")
        found = [
            program
            for program in self._programs.values()
            if program.active
            and (service is None or service in program.services)
            and (accepting_new is None or program.accepting_new == accepting_new)
            and (telehealth is None or program.telehealth == telehealth)
            and (open_at is None or program.open_now(open_at))
        ]
        return sorted(found, key=lambda program: (program.name.casefold(), program.id))

    def get(self, program_id: str) -> Program:
        """The program with this HealthcareService id (inactive ones too: old referrals name
        them). Raises KeyError when there is none."""
        try:
            return self._programs[program_id]
        except KeyError:
            raise KeyError(f"no program {program_id!r} in catalog {self.folder}") from None

    def label(self, program_id: str) -> str | None:
        """The words a referral names this program by ("name (phone)"), None if unknown."""
        try:
            return self.get(program_id).label
        except KeyError:
            return None

    def named(self, words: str | None) -> Program | None:
        """The active program a referral's words name: its id, its name or its label."""
        if not words:
            return None
        for program in self.programs():
            if words in (program.id, program.name, program.label):
                return program
        return None

    def resource(self, reference: str) -> FHIRAbstractResource:
        """The parsed fhirclient model for ``Type/id`` (e.g. ``Organization/example-otp``)."""
        return self._resources[reference]

    def counts(self) -> dict[str, int]:
        """How many resources of each type the catalog holds."""
        counts = dict.fromkeys(RESOURCE_TYPES, 0)
        for reference in self._resources:
            counts[reference.split("/", 1)[0]] += 1
        return counts


def program_of(
    service: _HealthcareService,
    organizations: dict[str, _Organization],
    locations: dict[str, _Location],
    timezone: str,
) -> Program:
    """The Program of a checked HealthcareService, with its provider and first location (every
    reference resolved: loading checked them)."""
    assert service.providedBy is not None and service.providedBy.reference is not None
    organization = organizations[service.providedBy.reference.removeprefix("Organization/")]
    services = service.codes(service.type, SERVICE_SYSTEM)
    traits = service.codes(service.characteristic, CHARACTERISTIC_SYSTEM)
    phone = next(p.value for p in service.telecom if p.system == "phone" and p.value)
    places = [
        locations[ref.reference.removeprefix("Location/")]
        for ref in service.location
        if ref.reference
    ]
    windows = windows_of(service.availableTime)
    closures = closures_of(service.notAvailable, ZoneInfo(timezone))
    return Program(
        id=service.id,
        name=service.name,
        organization=organization.name,
        organization_id=organization.id,
        services=tuple(services),
        service_labels=tuple(SERVICE_TYPES[code] for code in services),
        phone=phone,
        address=address_text(places[0].address) if places else None,
        hours=hours_text(windows),
        accepting_new="accepting-new-patients" in traits,
        telehealth="telehealth" in traits or "telehealth" in services,
        walk_in=service.appointmentRequired is False,
        same_day_bup="same-day-bup" in traits,
        active=service.active is not False and organization.active is not False,
        timezone=timezone,
        comment=service.comment,
        availability_exceptions=service.availabilityExceptions,
        windows=windows,
        closures=closures,
        video_link=next((p.value for p in service.telecom if p.system == "url" and p.value), None),
    )


def address_text(address: _Address | None) -> str | None:
    """An address on one line: its text, else street, city, state and postal code."""
    if address is None:
        return None
    if address.text:
        return address.text
    region = " ".join(part for part in (address.state, address.postalCode) if part)
    return ", ".join(part for part in (*address.line, address.city, region) if part) or None
