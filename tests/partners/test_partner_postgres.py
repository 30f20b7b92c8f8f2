"""On PostgreSQL (HANDOFF_TEST_POSTGRES_URL): the partner tables migrate, a client assertion's
jti taken by one token server is refused by another on the same database (two processes of
Handoff), and a token one issues the other accepts, until the client is revoked."""

from __future__ import annotations

import pytest

from smartapp.db import Database
from smartapp.partners.authserver import AuthError, TokenServer
from smartapp.partners.registry import PartnerDirectory
from tests.audit.conftest import pg_url  # noqa: F401  (the fresh-schema PostgreSQL fixture)
from tests.partners.helpers import ASSERTION_TYPE, PartnerClient, new_key

TOKEN_URL = "https://handoff.example.org/partner/auth/token"


def test_jti_and_tokens_are_shared_by_every_process(pg_url, tmp_path):  # noqa: F811
    database = Database(pg_url)
    database.migrate()
    partner = PartnerClient(
        "https://handoff.example.org",
        "bridge-health",
        "bridge-system",
        "Organization/example-bridge-health",
        [new_key("k1")],
        programs=["bridge-clinic"],
    )
    partner.write_file(tmp_path)
    first, second = (
        TokenServer(db=database, partners=PartnerDirectory(tmp_path).current, token_url=TOKEN_URL)
        for _ in range(2)
    )
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": partner.assertion(aud=TOKEN_URL),
        "scope": "system/Task.rs",
    }
    issued = first.issue(form)
    with pytest.raises(AuthError, match="replay"):
        second.issue(form)
    grant = second.authenticate(f"Bearer {issued['access_token']}")
    assert grant.partner.id == "bridge-health" and grant.allows("system/Task.rs")
    partner.write_file(tmp_path, revoked=True)
    with pytest.raises(AuthError, match="revoked"):
        first.authenticate(f"Bearer {issued['access_token']}")
    database.engine.dispose()
