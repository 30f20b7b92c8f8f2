"""The catalog's local codes and shared formats: what a program offers (SERVICE_TYPES), how it
works (CHARACTERISTICS), the settings file and the shapes of ids, times, dates and phones."""

from __future__ import annotations

import re

SERVICE_SYSTEM = "urn:handoff:catalog:service-type"
"""Local CodeSystem for what a program offers (HealthcareService.type)."""

CHARACTERISTIC_SYSTEM = "urn:handoff:catalog:characteristic"
"""Local CodeSystem for how a program works (HealthcareService.characteristic)."""

SERVICE_TYPES: dict[str, str] = {
    "buprenorphine": "Buprenorphine (office-based or bridge clinic)",
    "methadone-program": "Methadone (opioid treatment program)",
    "naltrexone": "Naltrexone (extended-release injection or oral)",
    "harm-reduction": "Harm reduction services",
    "syringe-services": "Syringe services program",
    "naloxone-distribution": "Naloxone distribution",
    "telehealth": "Telehealth MOUD",
    "peer-support": "Peer recovery support",
    "residential": "Residential treatment",
}
"""Codes of SERVICE_SYSTEM and their display (also the label shown to the physician)."""

CHARACTERISTICS: dict[str, str] = {
    "accepting-new-patients": "Accepting new patients",
    "telehealth": "Offers telehealth (video or phone)",
    "same-day-bup": "Same-day buprenorphine start",
}
"""Codes of CHARACTERISTIC_SYSTEM and their display."""

SETTINGS_FILE = "catalog.json"
DEFAULT_TIMEZONE = "America/New_York"
RESOURCE_TYPES = ("Organization", "Location", "HealthcareService")
ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
TIME_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]")
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
PHONE_RE = re.compile(r"[0-9+()\-. ]+(\s*(x|ext\.?)\s*[0-9]+)?", re.IGNORECASE)
