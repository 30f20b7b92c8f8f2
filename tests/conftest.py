"""Shared fixtures: a sandbox EHR and the Handoff app on real local ports, and a browser."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from smartapp.config import REPO_ROOT
from smartapp.serving import ServerHandle, reserve_port, serve_in_thread

SHARED_DIR = Path(os.environ.get("HANDOFF_SHARED_DIR", REPO_ROOT.parent / "shared"))
CHROMIUM = os.environ.get("HANDOFF_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
TEST_READER = "test-reader"
TEST_READER_REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED_DIR / "scenarios").is_dir():
        pytest.fail(f"shared folder not found at {SHARED_DIR} (set HANDOFF_SHARED_DIR)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def app_port() -> int:
    return reserve_port()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory, shared_dir, app_port) -> Iterator[ServerHandle]:
    """The sandbox EHR seeded with the 16 labelled scenarios, on its own port."""
    from smartapp.sandbox import SandboxClient, create_sandbox_app

    port = reserve_port()
    base_url = f"http://127.0.0.1:{port}"
    app_url = f"http://127.0.0.1:{app_port}"
    folder = tmp_path_factory.mktemp("sandbox")
    ehr = create_sandbox_app(
        base_url=base_url,
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
    )
    handle = serve_in_thread(ehr, "127.0.0.1", port)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def launch_dir(tmp_path_factory, sandbox) -> Path:
    """The sandbox registration, pointed at this test run's sandbox port."""
    folder = tmp_path_factory.mktemp("launch")
    registration = yaml.safe_load((REPO_ROOT / "launch" / "sandbox.yaml").read_text())
    registration.update(
        iss=f"{sandbox.url}/fhir", client_id="handoff-test", frame_ancestors=[sandbox.url]
    )
    (folder / "sandbox.yaml").write_text(yaml.safe_dump(registration))
    return folder


@pytest.fixture(scope="session")
def handoff(tmp_path_factory, launch_dir, app_port) -> Iterator[ServerHandle]:
    """The Handoff app on its own port, with its own SQLite database."""
    from smartapp import create_app

    folder = tmp_path_factory.mktemp("app")
    app = create_app(
        {
            "PUBLIC_URL": f"http://127.0.0.1:{app_port}",
            "LAUNCH_DIR": str(launch_dir),
            "DATABASE_URL": f"sqlite:///{folder / 'handoff.sqlite'}",
        },
        instance_path=str(folder),
    )
    handle = serve_in_thread(app, "127.0.0.1", app_port)
    handle.app = app
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
