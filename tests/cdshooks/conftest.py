"""One stack for the CDS Hooks tests: the sandbox EHR (the 29 labelled charts, dates shifted to
now) with Handoff's backend client registered, Handoff trusting one CDS client (the tests'
own, signing ES384 with its own key), and that client with a read token for each chart."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from joserfc.jwk import ECKey

from tests.backend_stack import start_backend_stack
from tests.cdshooks.cds_client import CdsClient, new_key, trust
from tests.conftest import TEST_READER, TEST_READER_REDIRECT
from tests.smart_helpers import FhirReader, token_for
from tests.stacks import Stack

ISSUER = "https://ehr.test.example/cds-client"
READ_SCOPE = "launch openid fhirUser patient/*.rs"
ORIGIN = "https://ehr-web.test.example"  # a browser-based CDS client's page


@dataclass
class CdsStack:
    stack: Stack
    client: CdsClient
    key: ECKey
    tokens: dict

    @property
    def fhir_base(self) -> str:
        return f"{self.stack.ehr_url}/fhir"

    def token(self, patient: str) -> dict:
        """A read token for the patient's chart (the client's fhirAuthorization)."""
        if patient not in self.tokens:
            self.tokens[patient] = token_for(
                self.stack.ehr_url, patient, TEST_READER, TEST_READER_REDIRECT, READ_SCOPE
            )
        return self.tokens[patient]

    def reader(self, patient: str) -> FhirReader:
        return FhirReader(self.fhir_base, self.token(patient)["access_token"])

    def authorization(self, patient: str) -> dict:
        token = self.token(patient)
        return {
            "access_token": token["access_token"],
            "token_type": "Bearer",
            "expires_in": int(token.get("expires_in", 300)),
            "scope": token.get("scope") or READ_SCOPE,
            "subject": TEST_READER,
        }


def start_cds_stack(folder, shared_dir) -> CdsStack:
    stack, _kid = start_backend_stack(folder, shared_dir, proxy=True, CDS_BUDGET_SECONDS=3.0)
    key = new_key("test-ehr-1")
    trust(stack.launch_dir, key, ISSUER, origins=[ORIGIN])
    client = CdsClient(stack.app.url, ISSUER, key, f"{stack.ehr_url}/fhir")
    return CdsStack(stack, client, key, {})


@pytest.fixture(scope="package")
def cds(tmp_path_factory, shared_dir) -> Iterator[CdsStack]:
    """For the tests that decide nothing (a decided visit gets no card)."""
    found = start_cds_stack(tmp_path_factory.mktemp("cdshooks"), shared_dir)
    try:
        yield found
    finally:
        found.stack.stop()
