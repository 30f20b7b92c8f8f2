"""The catalog's programs on the screen: the picker's choices (with whether each is open now)
and the program a physician's Sign names, in words for the linkage note. Flask-free."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from smartapp.screen import decisions as forms

if TYPE_CHECKING:
    from smartapp.services import Services

__all__ = ["chosen_program", "program_choices"]


def program_choices(services: Services, now: datetime) -> dict:
    """The catalog's programs for the picker, with whether each is open now."""
    if services.catalog is None:
        return {"programs": [], "service_types": {}, "catalog_error": services.catalog_error}
    from smartapp.catalog import SERVICE_TYPES

    programs = [
        {
            "id": p.id,
            "name": p.name,
            "phone": p.phone,
            "services": p.services,
            "accepting_new": p.accepting_new,
            "hours": p.hours,
            "open": p.open_now(now),
        }
        for p in services.catalog.programs()
    ]
    return {"programs": programs, "service_types": SERVICE_TYPES, "catalog_error": None}


def chosen_program(services: Services, form: forms.SignForm) -> str | None:
    """The program the physician picked (from the catalog) or typed, as words for the note."""
    catalog = services.catalog
    label = catalog.label(form.program) if form.program and catalog is not None else None
    return label or form.program_other or None
