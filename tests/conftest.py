"""Shared fixtures: a sandbox EHR and the Handoff app on real local ports, and a browser; and
the test tiers, each test marked by its folder and the fixtures it uses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from smartapp.config import REPO_ROOT
from smartapp.web.serving import ServerHandle, reserve_port, serve_in_thread
from tests.peers import medplum  # noqa: F401  (the third-party FHIR server fixture)
from tests.shared import SHARED_DIR, SHARED_ENV
from tests.tiers import mark_tiers

CHROMIUM = os.environ.get("HANDOFF_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
TEST_READER = "test-reader"
TEST_READER_REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED_DIR / "scenarios").is_dir():
        pytest.fail(f"shared folder not found at {SHARED_DIR} (set {SHARED_ENV})")
    return SHARED_DIR


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """unit, integration or e2e for every test, and postgres or slow where they apply
    (tests/tiers.py); a mark the test sets itself wins."""
    mark_tiers(items)


APP_VARIANTS = ("public", "basic", "jwt")
CLIENT_IDS = {"public": "handoff-test", "basic": "handoff-basic", "jwt": "handoff-jwt"}
BASIC_SECRET_ENV = "HANDOFF_TEST_CLIENT_SECRET"
BASIC_SECRET = "test-secret-3f9c2a7e5b1d"
STAFF_SECRET = "staff-secret-8a1c"


def launch_dir_issuer(launch_dir: Path) -> str:
    """The sandbox's FHIR base (its OIDC issuer), as registered in `launch_dir`."""
    return yaml.safe_load((launch_dir / "sandbox.yaml").read_text())["iss"]


@pytest.fixture(scope="session")
def app_ports() -> dict[str, int]:
    """One port per app variant (one per client auth method), known before anything starts."""
    return {variant: reserve_port() for variant in APP_VARIANTS}


@pytest.fixture(scope="session")
def app_port(app_ports) -> int:
    return app_ports["public"]


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory, shared_dir, app_ports) -> Iterator[ServerHandle]:
    """The sandbox EHR seeded with the 16 labelled scenarios, on its own port, with a client
    registered for each auth method and its test controls (fault switches) on."""
    from smartapp.sandbox import SandboxClient, create_sandbox_app

    port = reserve_port()
    base_url = f"http://127.0.0.1:{port}"
    urls = {v: f"http://127.0.0.1:{p}" for v, p in app_ports.items()}
    folder = tmp_path_factory.mktemp("sandbox")
    ehr = create_sandbox_app(
        base_url=base_url,
        database_url=f"sqlite:///{folder / 'sandbox.sqlite'}",
        clients=[
            SandboxClient(
                client_id=CLIENT_IDS["public"],
                redirect_uris=[f"{urls['public']}/callback"],
                launch_url=f"{urls['public']}/launch",
            ),
            SandboxClient(
                client_id=CLIENT_IDS["basic"],
                redirect_uris=[f"{urls['basic']}/callback"],
                launch_url=f"{urls['basic']}/launch",
                name="Handoff (basic)",
                auth_method="client_secret_basic",
                client_secret=BASIC_SECRET,
            ),
            SandboxClient(
                client_id=CLIENT_IDS["jwt"],
                redirect_uris=[f"{urls['jwt']}/callback"],
                launch_url=f"{urls['jwt']}/launch",
                name="Handoff (JWT)",
                auth_method="private_key_jwt",
                jwks_uri=f"{urls['jwt']}/.well-known/jwks.json",
            ),
            SandboxClient(
                client_id=TEST_READER,
                redirect_uris=[TEST_READER_REDIRECT],
                launch_url="http://127.0.0.1:9/launch",
                name="Test reader",
            ),
            SandboxClient(
                client_id="handoff-staff",
                redirect_uris=[f"{urls['public']}/staff/callback"],
                launch_url=f"{urls['public']}/",
                name="Handoff staff pages",
                auth_method="client_secret_basic",
                client_secret=STAFF_SECRET,
            ),
        ],
        shared_dir=shared_dir,
        seed=("scenarios",),
        test_controls=True,
    )
    handle = serve_in_thread(ehr, "127.0.0.1", port)
    yield handle
    handle.stop()


def write_registration(folder: Path, sandbox_url: str, **fields) -> Path:
    """The repo's sandbox registration, pointed at this run's sandbox, with `fields` changed."""
    from smartapp.cli import demo_registration  # the sandbox is registered by the demo only

    folder.mkdir(parents=True, exist_ok=True)
    registration = demo_registration(sandbox_url, **fields)
    (folder / "sandbox.yaml").write_text(yaml.safe_dump(registration))
    return folder


def start_app(folder: Path, port: int, launch_dir: Path, **config) -> ServerHandle:
    from smartapp import create_app

    app = create_app(
        {
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "LAUNCH_DIR": str(launch_dir),
            "DATABASE_URL": f"sqlite:///{folder / 'handoff.sqlite'}",
            "DEMO": True,  # beside the sandbox EHR, keys in the data folder
            **config,
        },
        instance_path=str(folder),
    )
    handle = serve_in_thread(app, "127.0.0.1", port)
    handle.app = app
    return handle


@pytest.fixture(scope="session")
def launch_dir(tmp_path_factory, sandbox) -> Path:
    return write_registration(
        tmp_path_factory.mktemp("launch"), sandbox.url, client_id=CLIENT_IDS["public"]
    )


@pytest.fixture(scope="session")
def handoff(tmp_path_factory, launch_dir, app_ports) -> Iterator[ServerHandle]:
    """Handoff as a public client, on its own port, with its own SQLite database; the sandbox
    is also its staff identity provider."""
    handle = start_app(
        tmp_path_factory.mktemp("app"),
        app_ports["public"],
        launch_dir,
        STAFF_OIDC_ISSUER=f"{launch_dir_issuer(launch_dir)}",
        STAFF_OIDC_CLIENT_ID="handoff-staff",
        STAFF_OIDC_CLIENT_SECRET=STAFF_SECRET,
    )
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def handoff_basic(tmp_path_factory, sandbox, app_ports) -> Iterator[ServerHandle]:
    """Handoff as a confidential client with client_secret_basic (secret from the env)."""
    os.environ[BASIC_SECRET_ENV] = BASIC_SECRET
    launch = write_registration(
        tmp_path_factory.mktemp("launch-basic"),
        sandbox.url,
        client_id=CLIENT_IDS["basic"],
        auth_method="client_secret_basic",
        client_secret_env=BASIC_SECRET_ENV,
    )
    handle = start_app(tmp_path_factory.mktemp("app-basic"), app_ports["basic"], launch)
    yield handle
    handle.stop()


@pytest.fixture(scope="session", params=["RS384", "ES384"])
def handoff_jwt(request, tmp_path_factory, sandbox, app_ports) -> Iterator[ServerHandle]:
    """Handoff as a confidential client with private_key_jwt, for each SMART algorithm."""
    from smartapp.launch.keys import KeyStore

    folder = tmp_path_factory.mktemp(f"app-jwt-{request.param}")
    kid = KeyStore(folder / "keys").generate(request.param)
    launch = write_registration(
        tmp_path_factory.mktemp("launch-jwt"),
        sandbox.url,
        client_id=CLIENT_IDS["jwt"],
        auth_method="private_key_jwt",
        key_id=kid,
        signing_alg=request.param,
    )
    handle = start_app(folder, app_ports["jwt"], launch)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `python3 dev.py test`, which installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()
