"""Community resource catalog: the programs a peer recovery coach can hand a patient off to.

The catalog is data owned by the coach program, not by developers: a folder of FHIR R4
Organization, Location and HealthcareService JSON files (one resource per file) plus an optional
``catalog.json`` settings file (catalog name and IANA time zone). See ``catalog/README.md``.

Loading validates in two layers and reports every problem at once, each with its file and the
field path, so whoever edits the data can fix everything in one pass:

1. FHIR R4 structure, from fhirclient's R4 model definitions: unknown elements, wrong JSON types,
   malformed dates and times, missing required elements; then each resource is parsed with its
   fhirclient model.
2. Handoff's conventions (pydantic): a program has a name, a phone, at least one service type
   from ``urn:handoff:catalog:service-type``, opening hours, a ``providedBy`` Organization and
   locations that exist in the catalog.

Pure: no Flask, no network. ``python -m smartapp.catalog check FOLDER`` runs the same checks.
"""


# Where each part lives (this package re-exports the public names, so importers need not know):
# codes.py (local codes), problems.py (Problem, CatalogError), structure.py (layer 1),
# conventions.py (layer 2), hours.py (opening hours), programs.py (Program, Catalog),
# load.py (load_catalog), cli.py (main: the command line).

from smartapp.catalog.cli import main
from smartapp.catalog.codes import (
    CHARACTERISTIC_SYSTEM,
    CHARACTERISTICS,
    DEFAULT_TIMEZONE,
    RESOURCE_TYPES,
    SERVICE_SYSTEM,
    SERVICE_TYPES,
    SETTINGS_FILE,
)
from smartapp.catalog.hours import Window, hours_text
from smartapp.catalog.load import load_catalog
from smartapp.catalog.problems import CatalogError, Problem
from smartapp.catalog.programs import Catalog, Program
from smartapp.catalog.structure import fhir_problems

__all__ = [
    "CHARACTERISTICS",
    "CHARACTERISTIC_SYSTEM",
    "DEFAULT_TIMEZONE",
    "RESOURCE_TYPES",
    "SERVICE_SYSTEM",
    "SERVICE_TYPES",
    "SETTINGS_FILE",
    "Catalog",
    "CatalogError",
    "Problem",
    "Program",
    "Window",
    "fhir_problems",
    "hours_text",
    "load_catalog",
    "main",
]
