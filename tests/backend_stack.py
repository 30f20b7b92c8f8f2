"""An EHR + Handoff stack where Handoff has SMART Backend Services access at the EHR (or not):
the sandbox registers Handoff's launch client and its backend client (Handoff's JWKS by URL,
`{app}/.well-known/jwks.json`, or by value), and Handoff's registration carries the matching
`backend:` block with a key made in its keys folder. Otherwise as tests/stacks.start_stack
(optional fault proxy in front of the sandbox, test controls on). With `staff_sign_in` the
sandbox is also the staff identity provider (Handoff's staff client, back at /staff/callback
and /partner/callback), as in a browser test where coaches and partners sign in."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text

from smartapp.launch.keys import KeyStore
from smartapp.web.serving import reserve_port, serve_in_thread
from tests.conftest import (
    STAFF_SECRET,
    TEST_READER,
    TEST_READER_REDIRECT,
    start_app,
    write_registration,
)
from tests.faultproxy import FaultProxy
from tests.launch_flow import Controls
from tests.stacks import Stack

LAUNCH_CLIENT = "handoff-test"
BACKEND_CLIENT = "handoff-test-backend"
#: What the outbox writes to a plain FHIR server (profile fhir-rest), as system/ scopes.
BACKEND_SCOPES = [
    "system/ServiceRequest.crus",
    "system/Task.crus",
    "system/DocumentReference.cs",
    "system/Provenance.cs",
    "system/MedicationRequest.cs",
]


def start_backend_stack(
    folder: Path,
    shared_dir: Path,
    *,
    backend: bool = True,
    alg: str = "ES384",
    jwks_by: str = "url",
    proxy: bool = False,
    staff_sign_in: bool = False,
    **app_config,
) -> tuple[Stack, str | None]:
    """The stack and the kid of Handoff's backend key (None without backend access)."""
    from smartapp.sandbox import SandboxClient, create_sandbox_app

    folder.mkdir(parents=True, exist_ok=True)
    ehr_port, app_port = reserve_port(), reserve_port()
    front = FaultProxy(f"http://127.0.0.1:{ehr_port}") if proxy else None
    public = front.url if front else f"http://127.0.0.1:{ehr_port}"
    app_url = f"http://127.0.0.1:{app_port}"
    clients = [
        SandboxClient(LAUNCH_CLIENT, [f"{app_url}/callback"], f"{app_url}/launch"),
        SandboxClient(TEST_READER, [TEST_READER_REDIRECT], "http://127.0.0.1:9/launch"),
    ]
    if staff_sign_in:
        clients.append(
            SandboxClient(
                "handoff-staff",
                [f"{app_url}/staff/callback", f"{app_url}/partner/callback"],
                f"{app_url}/",
                name="Handoff staff pages",
                auth_method="client_secret_basic",
                client_secret=STAFF_SECRET,
            )
        )
        app_config = {
            "STAFF_OIDC_ISSUER": f"{public}/fhir",
            "STAFF_OIDC_CLIENT_ID": "handoff-staff",
            "STAFF_OIDC_CLIENT_SECRET": STAFF_SECRET,
            **app_config,
        }
    kid = None
    fields: dict = {}
    if backend:
        keys = KeyStore(folder / "app" / "keys")  # the app's instance folder keeps its keys
        kid = keys.generate(alg)
        by = (
            {"jwks_uri": f"{app_url}/.well-known/jwks.json"}
            if jwks_by == "url"
            else {"jwks": keys.public_jwks()}
        )
        clients.append(
            SandboxClient(
                BACKEND_CLIENT,
                [],
                "",
                name="Handoff backend services",
                auth_method="private_key_jwt",
                backend_scopes=BACKEND_SCOPES,
                **by,
            )
        )
        fields["backend"] = {"client_id": BACKEND_CLIENT, "key_id": kid, "scopes": BACKEND_SCOPES}
    ehr_app = create_sandbox_app(
        base_url=public,
        database_url=f"sqlite:///{folder / 'sandbox.sqlite'}",
        clients=clients,
        shared_dir=shared_dir,
        seed=("scenarios",),
        test_controls=True,
    )
    ehr = serve_in_thread(ehr_app, "127.0.0.1", ehr_port)
    ehr.app = ehr_app
    write = {"profile": "fhir-rest", "doc_status": "final", "part2_program": False}
    launch_dir = write_registration(
        folder / "launch", public, client_id=LAUNCH_CLIENT, write=write, **fields
    )
    database_url = f"sqlite:///{folder / 'handoff.sqlite'}"
    app = start_app(folder / "app", app_port, launch_dir, DATABASE_URL=database_url, **app_config)
    stack = Stack(
        ehr=ehr,
        app=app,
        ehr_url=public,
        proxy=front,
        app_port=app_port,
        launch_dir=launch_dir,
        database_url=database_url,
    )
    return stack, kid


def end_the_launch(stack: Stack) -> None:
    """The launch token expires now and the EHR refuses its refresh: the physician's session
    is over, so Handoff's later writes need its backend token (or wait for a new launch).
    (For a token that really lives a minute: the fault `access_token_lifetime: 60` before the
    launch, plus `refuse_refresh`, since Handoff asks `online_access` for a refresh token.)"""
    controls = Controls(stack.ehr_url)
    controls.faults(refuse_refresh=True)
    controls.expire_tokens()


def sandbox_tokens(stack: Stack) -> list[tuple[str, str, str]]:
    """(client_id, scope, access_token) of every token the stack's sandbox issued."""
    engine = create_engine(f"sqlite:///{stack.launch_dir.parent / 'sandbox.sqlite'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT client_id, scope, access_token FROM oauth_token"))
            return [(str(a), str(b or ""), str(c)) for a, b, c in rows]
    finally:
        engine.dispose()
