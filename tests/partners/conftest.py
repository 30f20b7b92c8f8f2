"""One stack for the partner tests: the sandbox EHR (also the staff identity provider, with
Handoff's staff client allowed back at /staff/callback and /partner/callback), Handoff with
two community partners in its launch/partners/ folder, each with its own ES384 key, and
referrals signed for three patients."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smartapp.web.serving import ServerHandle, reserve_port, serve_in_thread
from tests import launch_flow
from tests.conftest import (
    STAFF_SECRET,
    TEST_READER,
    TEST_READER_REDIRECT,
    start_app,
    write_registration,
)
from tests.partners.helpers import PartnerClient, new_key
from tests.stacks import referral_of
from tests.staff_login import STAFF_KEY, staff_session_token

COACH = {
    "sub": "coach-p",
    "name": "Jordan Rivera, CPRS",
    "user_ref": "urn:staff:coach-p",
    "roles": ["coach"],
}


@dataclass
class PartnerStack:
    ehr: ServerHandle
    app: ServerHandle
    ehr_url: str
    app_url: str
    partners_dir: Path
    database_url: str
    a: PartnerClient
    b: PartnerClient

    def referral(self, patient_id: str) -> str:
        """Sign the patient's referral (once) and return its id."""
        try:
            return referral_of(self.database_url, patient_id).id
        except Exception:  # noqa: BLE001 - none yet: sign one
            launch = launch_flow.full(self.app_url, self.ehr_url, patient_id)
            signed = launch_flow.sign_all(launch, self.app_url)
            assert signed.status_code == 200, signed.text[:300]
            return referral_of(self.database_url, patient_id).id

    def coach(self, staff: dict = COACH):
        """A Flask test client signed in as a coach (the worklist tests do the same)."""
        client = self.app.app.test_client()
        with client.session_transaction() as session:
            session[STAFF_KEY] = staff_session_token(self.app.app, staff)
            session["csrf"] = "t" * 43
        return client

    def consent(
        self, referral_id: str, partner: PartnerClient, purpose: str = "TREAT", program: str = ""
    ):
        coach = self.coach()
        form = {"partner": partner.partner_id, "purpose": purpose, "program": program}
        answer = coach.post(
            f"/staff/handoffs/{referral_id}/consent", data={"csrf_token": "t" * 43, **form}
        )
        assert answer.status_code == 302, answer.get_data(as_text=True)[:300]
        return coach


@pytest.fixture(scope="package")
def partner_stack(tmp_path_factory, shared_dir) -> Iterator[PartnerStack]:
    from smartapp.sandbox import SandboxClient, create_sandbox_app

    folder = tmp_path_factory.mktemp("partners")
    ehr_port, app_port = reserve_port(), reserve_port()
    ehr_url, app_url = f"http://127.0.0.1:{ehr_port}", f"http://127.0.0.1:{app_port}"
    ehr_app = create_sandbox_app(
        base_url=ehr_url,
        database_url=f"sqlite:///{folder / 'sandbox.sqlite'}",
        clients=[
            SandboxClient(
                client_id="handoff-test",
                redirect_uris=[f"{app_url}/callback"],
                launch_url=f"{app_url}/launch",
            ),
            SandboxClient(
                client_id=TEST_READER,
                redirect_uris=[TEST_READER_REDIRECT],
                launch_url="http://127.0.0.1:9/launch",
                name="Test reader",
            ),
            SandboxClient(
                client_id="handoff-staff",
                redirect_uris=[f"{app_url}/staff/callback", f"{app_url}/partner/callback"],
                launch_url=f"{app_url}/",
                name="Handoff staff pages",
                auth_method="client_secret_basic",
                client_secret=STAFF_SECRET,
            ),
        ],
        shared_dir=shared_dir,
        seed=("scenarios",),
        test_controls=True,
    )
    ehr = serve_in_thread(ehr_app, "127.0.0.1", ehr_port)
    launch_dir = write_registration(folder / "launch", ehr_url, client_id="handoff-test")
    partners_dir = launch_dir / "partners"
    a = PartnerClient(
        app_url,
        "bridge-health",
        "bridge-health-system",
        "Organization/example-bridge-health",
        [new_key("bridge-1"), new_key("bridge-2")],
        programs=["bridge-clinic", "bridge-telehealth"],
        web_users=["demo-partner"],
    )
    b = PartnerClient(
        app_url,
        "recovery-community",
        "recovery-community-system",
        "Organization/example-recovery-community",
        [new_key("recovery-1")],
        programs=["recovery-center-peer-support"],
    )
    a.write_file(partners_dir)
    b.write_file(partners_dir)
    database_url = f"sqlite:///{folder / 'handoff.sqlite'}"
    app = start_app(
        folder / "app",
        app_port,
        launch_dir,
        DATABASE_URL=database_url,
        STAFF_OIDC_ISSUER=f"{ehr_url}/fhir",
        STAFF_OIDC_CLIENT_ID="handoff-staff",
        STAFF_OIDC_CLIENT_SECRET=STAFF_SECRET,
    )
    yield PartnerStack(ehr, app, ehr_url, app_url, partners_dir, database_url, a, b)
    app.stop()
    ehr.stop()
