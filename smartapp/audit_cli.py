"""`handoff audit`: verify the referral log, export it, hand auditors the public key.

Mounted in `smartapp.cli` with `cli.add_command(audit)`; also runnable on its own:
`python -m smartapp.audit_cli verify ...`. `verify` with `--database-url` and `--public-key` needs
nothing but the database and the public key (an auditor's machine); everything else reads the
app's configuration (`create_app()`: DATABASE_URL, AUDIT_SIGNING_KEY, the instance folder).
"""

from __future__ import annotations

import getpass
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from smartapp.audit.chain import DEFAULT_EVERY, app_checkpointing, signing_key_path
from smartapp.audit.export import export as run_export
from smartapp.audit.models import LogCheckpoint
from smartapp.audit.signing import SigningKeyError, key_id, load_public_key, load_signer
from smartapp.audit.verify import schema_problem
from smartapp.audit.verify import verify as verify_log
from smartapp.db import Database


class _Context:
    """The app, built only when a command needs its configuration."""

    def __init__(self, instance_path: Path | None) -> None:
        self.instance_path = instance_path
        self._app: Flask | None = None

    @property
    def built(self) -> bool:
        return self._app is not None

    @property
    def app(self) -> Flask:
        if self._app is None:
            from smartapp import create_app

            path = str(self.instance_path) if self.instance_path else None
            self._app = create_app(instance_path=path, use="config")  # opens no database
        return self._app

    def database(self, url: str | None) -> Database:
        if url:
            return Database(url)
        from smartapp.services import EXTENSION, require_existing

        db = self.app.extensions[EXTENSION].db
        require_existing(db)  # says so (exit 1) rather than creating an empty log
        return db


@click.group()
@click.option(
    "--instance-path",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HANDOFF_INSTANCE_PATH",
    help="The app's instance folder (default: Flask's, next to the package).",
)
@click.pass_context
def audit(ctx: click.Context, instance_path: Path | None) -> None:
    """The referral log for auditors: verify it, export it, get the public key."""
    ctx.obj = _Context(instance_path)


@audit.command()
@click.option("--database-url", help="SQLAlchemy URL (default: the app's database).")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM public key the checkpoints are signed with (repeat after a key rotation); "
    "default: the app's own key.",
)
@click.option(
    "--max-unsigned",
    type=click.IntRange(min=0),
    help="Events allowed after the last checkpoint before missing checkpoints count as a "
    "break (0: any number). Default: the app's AUDIT_CHECKPOINT_EVERY if the app's "
    f"configuration is read, else {DEFAULT_EVERY}.",
)
@click.pass_obj
def verify(
    obj: _Context,
    database_url: str | None,
    public_keys: tuple[Path, ...],
    max_unsigned: int | None,
) -> None:
    """Recompute every hash and checkpoint signature; report the first break (exit 1)."""
    try:
        keys = [load_public_key(path) for path in public_keys]
    except SigningKeyError as exc:
        raise click.UsageError(str(exc)) from exc
    db = obj.database(database_url)
    try:
        with db.session() as session:
            problem = schema_problem(session)
            if problem:
                click.echo(f"BROKEN: {problem}")
                sys.exit(1)
            signed = session.scalar(select(func.count()).select_from(LogCheckpoint))
            if signed and not keys:
                keys = [_app_public_key(obj)]
            report = verify_log(session, keys, _max_unsigned(obj, max_unsigned))
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read the log: {exc.__class__.__name__}: {exc}") from exc
    click.echo(report.summary())
    for finding in report.breaks[1:] if not report.ok else []:
        click.echo(f"  also at #{finding.seq}: {finding.message}", err=True)
    for warning in report.warnings:
        click.echo(f"  note: {warning}", err=True)
    sys.exit(0 if report.ok else 1)


def _max_unsigned(obj: _Context, given: int | None) -> int | None:
    if given is not None:
        return given or None
    if obj.built:
        return int(obj.app.config.get("AUDIT_CHECKPOINT_EVERY") or DEFAULT_EVERY)
    return DEFAULT_EVERY


def _app_public_key(obj: _Context):
    path = signing_key_path(obj.app)
    try:
        return load_signer(path, create=False).public_key
    except SigningKeyError as exc:
        raise click.UsageError(
            f"the log has signed checkpoints but no public key was given and {exc}; "
            "pass --public-key PEM"
        ) from exc


@audit.command("public-key")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write it here.")
@click.pass_obj
def public_key(obj: _Context, out: Path | None) -> None:
    """Print the checkpoint signing key's public half (PEM) for auditors.

    The private key is generated on first use if the app has none yet.
    """
    signer = app_checkpointing(obj.app).signer
    assert signer is not None
    if out:
        out.write_text(signer.public_pem())
        click.echo(f"public key {signer.key_id} written to {out}", err=True)
    else:
        click.echo(signer.public_pem(), nl=False)
        click.echo(f"key id {key_id(signer.public_key)}", err=True)


@audit.command()
@click.option("--database-url", help="SQLAlchemy URL (default: the app's database).")
@click.pass_obj
def checkpoint(obj: _Context, database_url: str | None) -> None:
    """Sign the chain head now (checkpoints are also made every N events)."""
    from smartapp import referral_log

    db = obj.database(database_url)
    with obj.app.app_context(), db.session() as session:
        made = referral_log.checkpoint(session)
    if made is None:
        click.echo("the log is empty: nothing to sign")
    else:
        click.echo(f"checkpoint #{made.seq} {made.hash} (key {made.key_id})")


def _moment(end: bool):
    """Parse YYYY-MM-DD or an ISO date-time (UTC unless an offset is given); a bare --to date
    means the end of that day."""

    def parse(_ctx, _param, value: str | None) -> datetime | None:
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise click.BadParameter("use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        if end and len(value) == 10:
            parsed += timedelta(days=1)
        return parsed.astimezone(UTC)

    return parse


@audit.command()
@click.option("--from", "start", callback=_moment(False), help="First day (or instant), UTC.")
@click.option("--to", "end", callback=_moment(True), help="Last day, inclusive (or instant).")
@click.option(
    "--format", "fmt", type=click.Choice(["ndjson", "csv"]), default="ndjson", show_default=True
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout.")
@click.option(
    "--user",
    default=getpass.getuser,
    show_default="the OS user",
    help="Who runs the export (recorded in the log).",
)
@click.option("--database-url", help="SQLAlchemy URL (default: the app's database).")
@click.pass_obj
def export(
    obj: _Context,
    start: datetime | None,
    end: datetime | None,
    fmt: str,
    out: Path | None,
    user: str,
    database_url: str | None,
) -> None:
    """Export events as FHIR AuditEvent NDJSON (IHE BALP) or CSV; the export is itself logged."""
    if start and end and end <= start:
        raise click.BadParameter("--to must come after --from")
    db = obj.database(database_url)
    with obj.app.app_context():  # the signing key, for the checkpoint the export may complete
        if out:
            with out.open("w", encoding="utf-8", newline="") as handle:
                result = run_export(
                    db, handle, fmt=fmt, start=start, end=end, user=user, destination=str(out)
                )
        else:
            stream = click.get_text_stream("stdout")
            result = run_export(db, stream, fmt=fmt, start=start, end=end, user=user)
    span = f" (#{result.first_seq}..#{result.last_seq})" if result.events else ""
    click.echo(
        f"exported {result.events} events{span} as {fmt} to {out or 'stdout'}, "
        f"sha256 {result.sha256}",
        err=True,
    )
    if result.broken:
        seqs = ", ".join(f"#{seq}" for seq in result.broken)
        click.echo(
            f"warning: left out {len(result.broken)} event(s) that cannot be read: {seqs} "
            "(damaged rows; run `handoff audit verify`)",
            err=True,
        )


if __name__ == "__main__":
    audit(prog_name="handoff audit")
