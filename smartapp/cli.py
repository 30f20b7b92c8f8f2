"""The `handoff` command: the demo, rule tooling, and (later) the outbox worker and audit."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import yaml

from smartapp.config import REPO_ROOT

DEMO_STAFF_SECRET = "handoff-staff-demo-secret"  # demo only: the sandbox's staff client


@click.group()
def cli() -> None:
    """Handoff: ED linkage to peer recovery coaches and MOUD, as a SMART on FHIR app."""


def _mount_rules() -> None:
    from smartapp.rules_cli import rules

    cli.add_command(rules)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--ehr-port", default=8800, show_default=True, help="Port of the sandbox EHR.")
@click.option("--app-port", default=8700, show_default=True, help="Port of the Handoff app.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=REPO_ROOT / "instance",
    show_default=True,
    help="Where the demo keeps its databases.",
)
@click.option(
    "--shared-dir",
    type=click.Path(path_type=Path),
    default=lambda: Path(os.environ.get("HANDOFF_SHARED_DIR", REPO_ROOT.parent / "shared")),
    help="The shared folder with scenarios/ and synthea/.",
)
@click.option(
    "--seed",
    default="scenarios,synthea",
    show_default=True,
    help="Data sets loaded into the sandbox EHR.",
)
def demo(
    host: str, ehr_port: int, app_port: int, data_dir: Path, shared_dir: Path, seed: str
) -> None:
    """Start the sandbox EHR and Handoff on this machine, with synthetic patients."""
    from smartapp import create_app
    from smartapp.sandbox import SandboxClient, create_sandbox_app
    from smartapp.serving import serve_in_thread

    if not (shared_dir / "scenarios").is_dir():
        raise click.UsageError(
            f"The shared folder was not found at {shared_dir}: it holds the synthetic patients. "
            "Pass --shared-dir PATH or set HANDOFF_SHARED_DIR."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    ehr_url = f"http://{host}:{ehr_port}"
    app_url = f"http://{host}:{app_port}"
    launch_dir = write_demo_registration(data_dir / "launch", ehr_url)
    click.echo(f"Loading the sandbox EHR (seed: {seed}); the first start takes a little while...")
    started = time.monotonic()
    ehr = create_sandbox_app(
        base_url=ehr_url,
        database_url=f"sqlite:///{data_dir / 'sandbox.sqlite'}",
        clients=[
            SandboxClient(
                client_id="handoff-demo",
                redirect_uris=[f"{app_url}/callback"],
                launch_url=f"{app_url}/launch",
            ),
            SandboxClient(
                client_id="handoff-staff",
                redirect_uris=[f"{app_url}/staff/callback"],
                launch_url=f"{app_url}/",
                name="Handoff staff pages",
                auth_method="client_secret_basic",
                client_secret=DEMO_STAFF_SECRET,
            ),
        ],
        shared_dir=shared_dir,
        seed=tuple(s for s in seed.split(",") if s),
    )
    app = create_app(
        {
            "PUBLIC_URL": app_url,
            "LAUNCH_DIR": str(launch_dir),
            # The sandbox is also the demo's identity provider for coaches and auditors.
            "STAFF_OIDC_ISSUER": f"{ehr_url}/fhir",
            "STAFF_OIDC_CLIENT_ID": "handoff-staff",
            "STAFF_OIDC_CLIENT_SECRET": DEMO_STAFF_SECRET,
        },
        instance_path=str(data_dir / "app"),
    )
    ehr_server = serve_in_thread(ehr, host, ehr_port)
    app_server = serve_in_thread(app, host, app_port)
    from smartapp.worker import OutboxWorker

    worker = OutboxWorker(app).start()
    click.echo(f"Sandbox EHR ready in {time.monotonic() - started:.1f} s.")
    click.echo(f"Handoff app:  {app_url}")
    click.echo(f"Coach worklist: {app_url}/worklist/  (sign in as a demo coach)")
    click.echo(f"Auditor console: {app_url}/console/  (sign in as the demo auditor)")
    click.echo(f"Open the chart: {ehr_url}/")
    click.echo("Press Ctrl+C to stop.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("Stopping.")
    finally:
        worker.stop()
        app_server.stop()
        ehr_server.stop()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8700, show_default=True)
@click.option(
    "--worker/--no-worker",
    default=True,
    show_default=True,
    help="Run the outbox worker in this process too.",
)
def serve(host: str, port: int, worker: bool) -> None:
    """Serve Handoff (configured by instance/config.py and HANDOFF_* variables).
    Production: gunicorn 'smartapp.wsgi:app' and `handoff outbox worker` beside it."""
    from werkzeug.serving import run_simple

    from smartapp import create_app
    from smartapp.worker import OutboxWorker

    app = create_app()
    running = OutboxWorker(app).start() if worker else None
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False)
    finally:
        if running:
            running.stop()


@cli.group()
def outbox() -> None:
    """The outbox of signed referrals waiting for, or refused by, the EHR."""


@outbox.command("worker")
@click.option("--poll", default=1.0, show_default=True, help="Seconds between passes.")
def outbox_worker(poll: float) -> None:
    """Deliver queued referrals until stopped (survives restarts: state is in the database)."""
    from smartapp import create_app
    from smartapp.worker import OutboxWorker

    worker = OutboxWorker(create_app(), poll_seconds=poll)
    try:
        worker.run_forever()
    except KeyboardInterrupt:
        worker.stop()


@outbox.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include written referrals.")
def outbox_list(show_all: bool) -> None:
    """Referrals by status, with the EHR's last message (no PHI beyond ids)."""
    from sqlalchemy import select

    from smartapp import create_app
    from smartapp.db import Referral
    from smartapp.services import current_services

    app = create_app()
    with app.app_context(), current_services().db.session() as session:
        query = select(Referral).order_by(Referral.created_at)
        if not show_all:
            query = query.where(Referral.status != "written")
        for referral in session.scalars(query):
            click.echo(
                f"{referral.id}\t{referral.status}\tattempts={referral.attempts}\t"
                f"next={referral.next_attempt_at:%Y-%m-%dT%H:%M:%SZ}\t"
                f"{referral.last_error or ''}"
            )


@cli.group()
def db() -> None:
    """Handoff's database schema (Alembic migrations, also run on every start)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the configured database (DATABASE_URL) to the newest schema."""
    from smartapp import create_app
    from smartapp.services import current_services

    app = create_app()
    with app.app_context():
        database = current_services().db
        database.migrate()
        click.echo(f"schema at revision {database.current_revision()}")


@cli.group()
def keys() -> None:
    """Handoff's signing keys for private_key_jwt (published at /.well-known/jwks.json)."""


def _key_store():
    from smartapp import create_app
    from smartapp.services import current_services

    app = create_app()
    with app.app_context():
        return current_services().keys


@keys.command("generate")
@click.option("--alg", type=click.Choice(["RS384", "ES384"]), default="RS384", show_default=True)
@click.option("--kid", default=None, help="Key id (default: alg-date-random).")
def keys_generate(alg: str, kid: str | None) -> None:
    """Create a signing key; register its kid with the EHR (registration `key_id`)."""
    from smartapp.keys import KeyStoreError

    store = _key_store()
    try:
        kid = store.generate(alg, kid)
    except KeyStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(kid)


@keys.command("list")
def keys_list() -> None:
    """The published keys: kid and algorithm."""
    store = _key_store()
    for kid in store.kids():
        click.echo(f"{kid}\t{store.algorithm(kid)}")


@keys.command("retire")
@click.argument("kid")
def keys_retire(kid: str) -> None:
    """Stop publishing and using a key (after the registration moved to a newer one)."""
    from smartapp.keys import KeyStoreError

    try:
        _key_store().retire(kid)
    except KeyStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"retired {kid}")


def write_demo_registration(folder: Path, ehr_url: str) -> Path:
    """The repo's sandbox registration, with the issuer adjusted to the demo's EHR port."""
    folder.mkdir(parents=True, exist_ok=True)
    registration = yaml.safe_load((REPO_ROOT / "launch" / "sandbox.yaml").read_text())
    registration["iss"] = f"{ehr_url}/fhir"
    registration["frame_ancestors"] = [ehr_url]
    (folder / "sandbox.yaml").write_text(yaml.safe_dump(registration, sort_keys=False))
    return folder


def _mount_audit() -> None:
    from smartapp.audit_cli import audit

    cli.add_command(audit)


def main() -> None:
    _mount_rules()
    _mount_audit()
    cli(prog_name="handoff")


if __name__ == "__main__":
    sys.exit(main())
