"""The `handoff` command: the demo, rule tooling, and (later) the outbox worker and audit."""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

import click
import yaml

from smartapp.config import INSTANCE_ENV, REPO_ROOT, resolve_instance_path

DEMO_STAFF_SECRET = "handoff-staff-demo-secret"  # demo only: the sandbox's staff client
DEMO_CONFIG_MARK = "# Written by `handoff demo`"


class _LazyGroup(click.Group):
    """A group whose command groups of other packages are imported only when one of them
    runs (or help lists them): `handoff rules backtest` then does not first import the
    audit tools and SQLAlchemy, half of its start-up (0.5 of 1.05 s measured)."""

    #: name -> "module:attribute" of the command group
    lazy = {
        "rules": "smartapp.rulestools.cli:rules",
        "audit": "smartapp.audit.cli:audit",
        "partners": "smartapp.partners.cli:partners",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attribute = self.lazy[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup)
@click.option(
    "--instance-path",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=INSTANCE_ENV,
    help="The app's instance folder (settings, SQLite database, keys); relative paths are "
    "from here. Default: HANDOFF_INSTANCE_PATH, else instance/ (where the demo runs).",
)
@click.option("--verbose", "-v", is_flag=True, help="Also log each schema migration as it runs.")
@click.pass_context
def cli(ctx: click.Context, instance_path: Path | None, verbose: bool) -> None:
    """Handoff: ED linkage to peer recovery coaches and MOUD, as a SMART on FHIR app."""
    ctx.obj = {"instance_path": instance_path, "verbose": verbose}
    if instance_path:  # `handoff --instance-path X audit ...` means X there too
        ctx.default_map = {"audit": {"instance_path": instance_path}}


def _app(use: str = "serve"):
    """The app as this command needs it (see smartapp.create_app `use`), for the instance the
    `handoff` group was given (else HANDOFF_INSTANCE_PATH, else instance/)."""
    from smartapp import create_app

    options = click.get_current_context().find_root().obj or {}
    settings = {"LOG_MIGRATIONS": True} if options.get("verbose") else None
    return create_app(settings, instance_path=options.get("instance_path"), use=use)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--ehr-port", default=8800, show_default=True, help="Port of the sandbox EHR.")
@click.option("--app-port", default=8700, show_default=True, help="Port of the Handoff app.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the demo keeps its databases: the app's instance folder, so every `handoff` "
    "command finds the demo's data. Default: --instance-path, HANDOFF_INSTANCE_PATH, else "
    "instance/.",
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
    host: str, ehr_port: int, app_port: int, data_dir: Path | None, shared_dir: Path, seed: str
) -> None:
    """Start the sandbox EHR and Handoff on this machine, with synthetic patients."""
    from smartapp import create_app
    from smartapp.sandbox import SandboxClient, create_sandbox_app
    from smartapp.web.serving import serve_in_thread

    if not (shared_dir / "scenarios").is_dir():
        raise click.UsageError(
            f"The shared folder was not found at {shared_dir}: it holds the synthetic patients. "
            "Pass --shared-dir PATH or set HANDOFF_SHARED_DIR."
        )
    root = click.get_current_context().find_root().obj or {}
    data_dir = resolve_instance_path(data_dir or root.get("instance_path"))
    ehr_url = f"http://{host}:{ehr_port}"
    app_url = f"http://{host}:{app_port}"
    write_demo_settings(data_dir, ehr_url, app_url)
    if (data_dir / "app" / "handoff.sqlite").exists():
        click.echo(f"Note: {data_dir / 'app'} holds an earlier demo's data, no longer read.")
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
                redirect_uris=[f"{app_url}/staff/callback", f"{app_url}/partner/callback"],
                launch_url=f"{app_url}/",
                name="Handoff staff pages",
                auth_method="client_secret_basic",
                client_secret=DEMO_STAFF_SECRET,
            ),
            SandboxClient(  # SMART Backend Services: Handoff's writes after the launch
                client_id=DEMO_BACKEND_CLIENT_ID,
                redirect_uris=[],
                launch_url="",
                name="Handoff backend services",
                auth_method="private_key_jwt",
                jwks_uri=f"{app_url}/.well-known/jwks.json",
                backend_scopes=list(DEMO_BACKEND_SCOPES),
            ),
        ],
        shared_dir=shared_dir,
        seed=tuple(s for s in seed.split(",") if s),
    )
    app = create_app(instance_path=str(data_dir))  # the settings written above
    ehr_server = serve_in_thread(ehr, host, ehr_port)
    app_server = serve_in_thread(app, host, app_port)
    from smartapp.writeback.worker import OutboxWorker

    worker = OutboxWorker(app).start()
    click.echo(f"Sandbox EHR ready in {time.monotonic() - started:.1f} s.")
    click.echo(f"Handoff app:  {app_url}")
    click.echo(f"Coach worklist: {app_url}/worklist/  (sign in as a demo coach)")
    click.echo(f"Partner page: {app_url}/partner/  (sign in as the demo partner)")
    click.echo(f"Auditor console: {app_url}/console/  (sign in as the demo auditor)")
    click.echo(f"Open the chart: {ehr_url}/")
    click.echo(f"Data: {data_dir} (other `handoff` commands: --instance-path {data_dir})")
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
    """Serve Handoff (configured by instance/config.py and HANDOFF_* variables; PUBLIC_URL
    must say where it is reached). Production: gunicorn -c python:smartapp.web.gunicorn_conf
    'smartapp.wsgi:app' and `handoff outbox worker` beside it."""
    from werkzeug.serving import run_simple

    from smartapp.writeback.worker import OutboxWorker

    app = _app()
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
    from smartapp.writeback.worker import OutboxWorker

    worker = OutboxWorker(_app(), poll_seconds=poll)
    try:
        worker.run_forever()
    except KeyboardInterrupt:
        worker.stop()


@outbox.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include written referrals.")
def outbox_list(show_all: bool) -> None:
    """Referrals by status, with the EHR's last message (no PHI beyond ids)."""
    from sqlalchemy import select

    from smartapp.db import Referral
    from smartapp.services import current_services

    app = _app("existing")
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
    """Migrate the configured database (DATABASE_URL) to the newest schema. Every start does
    it too (once, under a lock); run it as a one-shot step before starting if you prefer. It
    also brings what staff pages keep beside the log up to date with it (the dashboard's
    visits, the console's event tags, the supervisor's holdings: a migration that makes one of
    them anew, such as 0009, 0010 and 0011, would otherwise leave that to the first view that
    reads it: minutes at millions of events), and plans the follow-up of any handoff that has
    none (the staff pages plan only the handoffs signed lately)."""
    from smartapp.handoffs import followup
    from smartapp.services import current_services
    from smartapp.staff.console import tags
    from smartapp.staff.dashboard.service import bring_up_to_date
    from smartapp.staff.supervisor import holdings

    app = _app("config")
    with app.app_context():
        database = current_services().db
        before = database.current_revision() if database.exists() else None
        database.migrate()
        click.echo(f"schema at revision {database.current_revision()} (was {before or 'empty'})")
        bring_up_to_date(database)
        click.echo("dashboard visits up to date with the referral log")
        tags.bring_up_to_date(database)
        click.echo("console event tags up to date with the referral log")
        holdings.bring_up_to_date(database)
        click.echo("supervisor handoff holdings up to date with the referral log")
        settings = followup.FollowupSettings.from_config(app.config)
        planned = followup.plan_every_handoff(database, settings)
        click.echo(f"follow-up planned for {planned} handoff(s) that had no plan")


@cli.group()
def launch() -> None:
    """Launch contexts: what Handoff keeps of each launch (PHI), and for how long."""


@launch.command("purge")
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=0),
    default=None,
    help="Days; default: LAUNCH_CONTEXT_RETENTION_DAYS.",
)
def launch_purge(days: int | None) -> None:
    """Delete launch contexts older than the retention period (run it daily). Contexts a
    queued write still needs are kept; the referral log is never purged."""
    from datetime import timedelta

    from smartapp.launch.retention import purge_launch_contexts
    from smartapp.services import current_services

    app = _app("existing")
    with app.app_context():
        days = app.config["LAUNCH_CONTEXT_RETENTION_DAYS"] if days is None else days
        purged = purge_launch_contexts(
            current_services().db,
            older_than=timedelta(days=days),
            state_ttl=timedelta(seconds=app.config["STATE_TTL_SECONDS"]),
        )
    click.echo(
        f"purged {purged.contexts} launch contexts older than {days} days "
        f"({purged.kept_for_outbox} kept for queued writes) and "
        f"{purged.authorizations} expired authorizations"
    )


@cli.group()
def keys() -> None:
    """Handoff's signing keys for private_key_jwt (published at /.well-known/jwks.json)."""


def _key_store():
    from smartapp.services import current_services

    app = _app("config")
    with app.app_context():
        return current_services().keys


@keys.command("generate")
@click.option("--alg", type=click.Choice(["RS384", "ES384"]), default="RS384", show_default=True)
@click.option("--kid", default=None, help="Key id (default: alg-date-random).")
def keys_generate(alg: str, kid: str | None) -> None:
    """Create a signing key; register its kid with the EHR (registration `key_id`)."""
    from smartapp.launch.keys import KeyStoreError

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
    from smartapp.launch.keys import KeyStoreError

    try:
        _key_store().retire(kid)
    except KeyStoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"retired {kid}")


def demo_registration(ehr_url: str, **fields) -> dict:
    """The sandbox EHR's registration, for the demo (and tests) only: it is written into the
    demo's own folder, never into launch/, so production never accepts the sandbox."""
    return {
        "id": "sandbox",
        "name": "Handoff sandbox EHR",
        "iss": f"{ehr_url}/fhir",
        "client_id": "handoff-demo",
        "auth_method": "public",
        # Origins allowed to embed Handoff in an iframe: the sandbox's chart page.
        "frame_ancestors": [ehr_url],
        "write": {
            "profile": "fhir-rest",
            "doc_status": "final",
            "coach_team": {"display": "Peer recovery coach team"},
            "part2_program": False,
        },
    } | fields


def write_demo_registration(folder: Path, ehr_url: str, **fields) -> Path:
    """The demo's registration folder: the sandbox at the demo's EHR port, nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(demo_registration(ehr_url, **fields), sort_keys=False)
    (folder / "sandbox.yaml").write_text(text)
    return folder


def write_demo_settings(instance: Path, ehr_url: str, app_url: str) -> Path:
    """The demo's settings as the instance's config.py, so every command run beside the demo
    (`handoff audit verify`, `handoff outbox list`) reads the same instance as the app."""
    instance.mkdir(parents=True, exist_ok=True)
    config = instance / "config.py"
    if config.exists() and not config.read_text().startswith(DEMO_CONFIG_MARK):
        raise click.UsageError(
            f"{config} holds settings that are not the demo's: give the demo its own folder "
            "with --data-dir."
        )
    launch_dir = write_demo_registration(
        instance / "launch", ehr_url, backend=demo_backend(instance / "keys")
    )
    write_demo_partner(launch_dir / "partners")
    settings = {
        "DEMO": True,
        "PUBLIC_URL": app_url,
        "LAUNCH_DIR": str(launch_dir),
        # The sandbox is also the demo's identity provider for coaches and auditors.
        "STAFF_OIDC_ISSUER": f"{ehr_url}/fhir",
        "STAFF_OIDC_CLIENT_ID": "handoff-staff",
        "STAFF_OIDC_CLIENT_SECRET": DEMO_STAFF_SECRET,
    }
    lines = [f"{DEMO_CONFIG_MARK} on every start: the demo's settings. Not for production."]
    lines += [f"{name} = {value!r}" for name, value in settings.items()]
    config.write_text("\n".join(lines) + "\n")
    return config


def write_demo_partner(folder: Path) -> Path:
    """The demo's one community partner (the catalog's Example Bridge Health), for its web
    page only: the sandbox's user `demo-partner` signs in for it; no backend client."""
    folder.mkdir(parents=True, exist_ok=True)
    partner = {
        "id": "bridge-health",
        "name": "Example Bridge Health",
        "organization": {"reference": "Organization/example-bridge-health"},
        "programs": ["bridge-clinic", "bridge-naltrexone", "bridge-telehealth"],
        "web_users": ["demo-partner"],
    }
    path = folder / "bridge-health.yaml"
    path.write_text(yaml.safe_dump(partner, sort_keys=False))
    return path


#: The demo's SMART Backend Services client at the sandbox (Handoff's JWKS by URL), the kid of
#: its key (made in the demo's keys folder on first use) and its system/ scopes: what the
#: outbox writes to a plain FHIR server (create and search by identifier; read and update of
#: the Task and the ServiceRequest; Provenance of each update).
DEMO_BACKEND_CLIENT_ID = "handoff-demo-backend"
DEMO_BACKEND_KID = "demo-backend-es384"
DEMO_BACKEND_SCOPES = (
    "system/ServiceRequest.crus",
    "system/Task.crus",
    "system/DocumentReference.cs",
    "system/Provenance.cs",
    "system/MedicationRequest.cs",
)


def demo_backend(keys_folder: Path) -> dict:
    """The demo registration's `backend:` block (SMART Backend Services at the sandbox, whose
    client `handoff-demo-backend` reads Handoff's JWKS); makes the demo's ES384 key once."""
    from smartapp.launch.keys import KeyStore

    store = KeyStore(keys_folder)
    if DEMO_BACKEND_KID not in store.kids():
        store.generate("ES384", DEMO_BACKEND_KID)
    return {
        "client_id": DEMO_BACKEND_CLIENT_ID,
        "key_id": DEMO_BACKEND_KID,
        "scopes": list(DEMO_BACKEND_SCOPES),
    }


@cli.group("backend")
def backend_group() -> None:
    """SMART Backend Services at each EHR (the registrations' `backend:` blocks)."""


@backend_group.command("check")
@click.argument("registration_id", required=False)
def backend_check(registration_id: str | None) -> None:
    """Ask each EHR with a `backend:` block (or REGISTRATION_ID's) for a token, never shown:
    prints what it granted, or why it refused; exit status 1 when one failed."""
    from smartapp.launch import backend
    from smartapp.services import current_services

    app = _app("config")
    with app.app_context():
        services = current_services()
        chosen = [r for r in services.registry if registration_id in (None, r.id)]
        if registration_id and not chosen:
            raise click.ClickException(f"no registration {registration_id}")
        failed = False
        for registration in chosen:
            if registration.backend is None and registration_id is None:
                click.echo(f"{registration.id}: no backend access (no backend: block)")
                continue
            try:
                click.echo(backend.check(registration, services.keys, services.timeout))
            except backend.BackendError as exc:
                failed = True
                click.echo(f"{registration.id}: {exc}", err=True)
    if failed:
        raise SystemExit(1)


def main() -> None:
    cli(prog_name="handoff")


if __name__ == "__main__":
    main()
