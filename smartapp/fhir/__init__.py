"""FHIR: the client that talks to the EHR (client.py: transport, searches, writes), its errors
(errors.py) and reading a patient's chart (chart.py: bounded, tolerant batch read).

The public names are re-exported here, so `from smartapp.fhir import FhirClient` works."""

from smartapp.fhir.chart import (
    CHART_TYPES,
    ChartLimits,
    ChartRead,
    ChartTooLarge,
    chart_searches,
    read_chart,
)
from smartapp.fhir.client import FHIR_JSON, FhirClient
from smartapp.fhir.errors import FhirError

__all__ = [
    "CHART_TYPES",
    "FHIR_JSON",
    "ChartLimits",
    "ChartRead",
    "ChartTooLarge",
    "FhirClient",
    "FhirError",
    "chart_searches",
    "read_chart",
]
