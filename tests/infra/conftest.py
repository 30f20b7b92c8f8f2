"""The peer FHIR server fixture for these tests (tests/peers.py; a root conftest may import
it too)."""

from tests.peers import medplum  # noqa: F401
