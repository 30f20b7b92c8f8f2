"""A whole EHR + Handoff stack for one test module: a sandbox with a write behaviour, an
optional fault-injecting proxy in front of it (as a reverse proxy in front of an EHR: the
sandbox's public URL is the proxy's), and Handoff registered with the matching write profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from smartapp.db import Database, Referral
from smartapp.web.serving import ServerHandle, reserve_port, serve_in_thread
from tests.conftest import TEST_READER, TEST_READER_REDIRECT, start_app, write_registration
from tests.faultproxy import FaultProxy
from tests.smart_helpers import FhirReader, token_for

COACH_POOL = {
    "reference": "Organization/peer-recovery-coach-team",
    "display": "ED peer recovery coach pool",
}


def started(process, url: str, seconds: float = 30.0):
    """Wait until the server `process` answers at `url`; kill it and fail if it never does."""
    import time

    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=5)
            return process
        except requests.RequestException:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"the server for {url} did not start")


@dataclass
class Stack:
    ehr: ServerHandle
    app: ServerHandle
    ehr_url: str  # the EHR's public origin (the proxy's when there is one)
    proxy: FaultProxy | None
    app_port: int
    launch_dir: Path
    database_url: str

    def reader(self, patient_id: str) -> FhirReader:
        """A FHIR reader with a token of its own (through the proxy, if any: its faults are
        armed only for the requests a test names)."""
        token = token_for(self.ehr_url, patient_id, TEST_READER, TEST_READER_REDIRECT)
        return FhirReader(f"{self.ehr_url}/fhir", token["access_token"])

    def stop(self) -> None:
        self.app.stop()
        if self.proxy:
            self.proxy.close()
        self.ehr.stop()


def start_stack(
    folder: Path,
    shared_dir: Path,
    behaviour: str = "fhir-rest",
    profile: str = "fhir-rest",
    proxy: bool = False,
    **app_config,
) -> Stack:
    from smartapp.sandbox import SandboxClient, create_sandbox_app

    folder.mkdir(parents=True, exist_ok=True)
    ehr_port, app_port = reserve_port(), reserve_port()
    front = FaultProxy(f"http://127.0.0.1:{ehr_port}") if proxy else None
    public = front.url if front else f"http://127.0.0.1:{ehr_port}"
    app_url = f"http://127.0.0.1:{app_port}"
    ehr_app = create_sandbox_app(
        base_url=public,
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
        ],
        shared_dir=shared_dir,
        seed=("scenarios",),
        test_controls=True,
        write_behaviour=behaviour,
    )
    ehr = serve_in_thread(ehr_app, "127.0.0.1", ehr_port)
    write = {
        "profile": profile,
        "doc_status": "preliminary" if profile == "epic" else "final",
        "coach_team": {"display": "Peer recovery coach team"},
        "part2_program": False,
    }
    if profile == "oracle-health":
        write["coach_pool"] = COACH_POOL
    launch_dir = write_registration(
        folder / "launch", public, client_id="handoff-test", write=write
    )
    database_url = f"sqlite:///{folder / 'handoff.sqlite'}"
    app = start_app(folder / "app", app_port, launch_dir, DATABASE_URL=database_url, **app_config)
    return Stack(
        ehr=ehr,
        app=app,
        ehr_url=public,
        proxy=front,
        app_port=app_port,
        launch_dir=launch_dir,
        database_url=database_url,
    )


def referral_of(database_url: str, patient_id: str) -> Referral:
    """The one referral Handoff stored for a patient's visit (read from the app's database)."""
    with Database(database_url).session() as session:
        return session.scalars(select(Referral).where(Referral.patient_id == patient_id)).one()
