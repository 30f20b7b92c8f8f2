"""The `handoff` command: the demo, rule tooling, and (later) the outbox worker and audit."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import yaml

from smartapp.config import REPO_ROOT


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
            )
        ],
        shared_dir=shared_dir,
        seed=tuple(s for s in seed.split(",") if s),
    )
    app = create_app(
        {"PUBLIC_URL": app_url, "LAUNCH_DIR": str(launch_dir)},
        instance_path=str(data_dir / "app"),
    )
    ehr_server = serve_in_thread(ehr, host, ehr_port)
    app_server = serve_in_thread(app, host, app_port)
    click.echo(f"Sandbox EHR ready in {time.monotonic() - started:.1f} s.")
    click.echo(f"Handoff app:  {app_url}")
    click.echo(f"Open the chart: {ehr_url}/")
    click.echo("Press Ctrl+C to stop.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("Stopping.")
    finally:
        app_server.stop()
        ehr_server.stop()


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


def main() -> None:
    _mount_rules()
    cli(prog_name="handoff")


if __name__ == "__main__":
    sys.exit(main())
