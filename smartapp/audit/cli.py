"""`handoff audit`: verify the referral log, export it, hand auditors the public key.

Named in `smartapp.cli`'s lazily imported command groups; also runnable on its own:
`python -m smartapp.audit.cli verify ...`. `verify` with `--database-url` and `--public-key` needs
nothing but the database and the public key (an auditor's machine); everything else reads the
app's configuration (`create_app()`: DATABASE_URL, AUDIT_SIGNING_KEY, the instance folder).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from smartapp.audit.chain import (
    DEFAULT_EVERY,
    NoSignerError,
    app_checkpointing,
    demo_or_test,
    signing_key_path,
)
from smartapp.audit.export import export as run_export
from smartapp.audit.export_jobs import default_jobs
from smartapp.audit.incremental import verify_everything
from smartapp.audit.kept import KeptCheckpoint, KeptCheckpointError
from smartapp.audit.kept import append as append_kept
from smartapp.audit.kept import read as read_kept
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
    metavar="PEM|BASE64",
    help="The public key you trust the checkpoints to be signed with: a PEM file (from "
    "`handoff audit public-key`), or the key in base64 (raw 32 bytes or DER); repeat after a "
    "key rotation. Required when the log has checkpoints (in the demo: the app's own key).",
)
@click.option(
    "--checkpoints",
    "kept_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Checkpoints kept off the box (JSON lines, from `handoff audit checkpoint --export` "
    "or the AUDIT_CHECKPOINT_SINK file): the log must reach the last one unchanged, and the "
    "database's checkpoints must be these.",
)
@click.option(
    "--max-unsigned",
    type=click.IntRange(min=0),
    help="Events allowed after the last checkpoint before missing checkpoints count as a "
    "break (0: any number). Default: the app's AUDIT_CHECKPOINT_EVERY if the app's "
    f"configuration is read, else {DEFAULT_EVERY}.",
)
@click.option(
    "--record",
    is_flag=True,
    help="Record this full verification in the database (when, through which event, what it "
    "found) for the auditor console, whose pages then check only the events after it: run it "
    "on a schedule (cron).",
)
@click.pass_obj
def verify(
    obj: _Context,
    database_url: str | None,
    public_keys: tuple[str, ...],
    kept_files: tuple[Path, ...],
    max_unsigned: int | None,
    record: bool,
) -> None:
    """Recompute every hash and checkpoint signature, check the log against the kept
    checkpoints and the referral tables; report the first break (exit 1)."""
    try:
        keys = [trusted_key(value) for value in public_keys]
        kept = _kept(kept_files)
    except (SigningKeyError, KeptCheckpointError) as exc:
        raise click.UsageError(str(exc)) from exc
    db = obj.database(database_url)
    try:
        with db.session() as session:
            problem = schema_problem(session)
            if problem:
                click.echo(f"BROKEN: {problem}")
                sys.exit(1)
            signed = session.scalar(select(func.count()).select_from(LogCheckpoint))
            if (signed or kept) and not keys:
                keys = [_app_public_key(obj)]
            most = _max_unsigned(obj, max_unsigned)
            if record:
                report = verify_everything(
                    session, keys, most, kept, reason="recorded", cross_check=True
                ).report
            else:
                report = verify_log(session, keys, most, kept=kept, cross_check=True)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read the log: {exc.__class__.__name__}: {exc}") from exc
    click.echo(report.summary())
    first = report.first
    for finding in [b for b in report.breaks if b is not first]:
        where = "" if finding.kind == "coverage" else f" at #{finding.seq}"
        click.echo(f"  also{where}: {finding.message}", err=True)
    if not kept:
        click.echo(
            "  note: no kept checkpoints given (--checkpoints FILE): events after the last "
            "checkpoint in the database, and checkpoints removed with them, are not proven",
            err=True,
        )
    for warning in report.warnings:
        click.echo(f"  note: {warning}", err=True)
    sys.exit(0 if report.ok else 1)


def _max_unsigned(obj: _Context, given: int | None) -> int | None:
    if given is not None:
        return given or None
    if obj.built:
        return int(obj.app.config.get("AUDIT_CHECKPOINT_EVERY") or DEFAULT_EVERY)
    return DEFAULT_EVERY


def trusted_key(value: str) -> Ed25519PublicKey:
    """A public key given on the command line: a PEM file, or base64 (raw 32 bytes or DER)."""
    path = Path(value).expanduser()
    if path.is_file():
        return load_public_key(path)
    try:
        raw = base64.b64decode(value, validate=True)
        key = (
            Ed25519PublicKey.from_public_bytes(raw)
            if len(raw) == 32
            else serialization.load_der_public_key(raw)
        )
    except (binascii.Error, ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"--public-key {value[:40]!r}: neither a PEM file nor a base64 public key"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"--public-key {value[:40]!r}: not an Ed25519 public key")
    return key


def _kept(files: tuple[Path, ...]) -> list[KeptCheckpoint]:
    """The kept checkpoints of every file given, by seq (one per seq)."""
    found: dict[int, KeptCheckpoint] = {}
    for path in files:
        for cp in read_kept(path):
            earlier = found.setdefault(cp.seq, cp)
            if not earlier.same_as(cp):
                raise KeptCheckpointError(
                    f"the files given keep two different checkpoints #{cp.seq}"
                )
    return [found[seq] for seq in sorted(found)]


def _app_public_key(obj: _Context):
    """The app's own key: only in the demo and the tests. Elsewhere the key beside the app is
    no independent check (whoever rewrote the log could have re-signed it with that key)."""
    if not demo_or_test(obj.app):
        raise click.UsageError(
            "the log has signed checkpoints: pass --public-key PEM, the public key you trust "
            "(from `handoff audit public-key`, kept apart from this machine); the app's own key "
            "is not an independent check"
        )
    path = signing_key_path(obj.app)
    try:
        key = load_signer(path, create=False).public_key
    except SigningKeyError as exc:
        raise click.UsageError(
            f"the log has signed checkpoints but no public key was given and {exc}; "
            "pass --public-key PEM"
        ) from exc
    click.echo("  note: checked with the app's own key (demo): not an independent check", err=True)
    return key


@audit.command("public-key")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write it here.")
@click.pass_obj
def public_key(obj: _Context, out: Path | None) -> None:
    """Print the checkpoint signing key's public half (PEM) for auditors.

    The private key is generated on first use if the app has none yet.
    """
    checkpointing = app_checkpointing(obj.app)
    signer = checkpointing.signer
    if signer is None:
        raise click.ClickException(checkpointing.problem or "no signing key configured")
    if out:
        out.write_text(signer.public_pem())
        click.echo(f"public key {signer.key_id} written to {out}", err=True)
    else:
        click.echo(signer.public_pem(), nl=False)
        click.echo(f"key id {key_id(signer.public_key)}", err=True)


@audit.command()
@click.option("--database-url", help="SQLAlchemy URL (default: the app's database).")
@click.option(
    "--export",
    "export_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Then append every checkpoint this file does not hold yet to it (JSON lines, created "
    "if missing): the auditor's copy, kept off the box, for `verify --checkpoints`.",
)
@click.pass_obj
def checkpoint(obj: _Context, database_url: str | None, export_to: Path | None) -> None:
    """Sign the chain head now (checkpoints are also made every N events)."""
    from smartapp.audit import log as referral_log

    db = obj.database(database_url)
    try:
        with obj.app.app_context(), db.session() as session:
            made = referral_log.checkpoint(session)
    except NoSignerError as exc:
        raise click.ClickException(str(exc)) from exc
    if made is None:
        click.echo("the log is empty: nothing to sign")
    else:
        click.echo(f"checkpoint #{made.seq} {made.hash} (key {made.key_id})")
    if export_to:
        _export_checkpoints(db, export_to)


def _export_checkpoints(db: Database, path: Path) -> None:
    """Append the database's checkpoints after the file's last one; refuse when the file's
    checkpoints are not the database's (that is for `verify --checkpoints` to report)."""
    try:
        already = read_kept(path) if path.exists() else []
    except KeptCheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    with db.session() as session:
        stored = {cp.seq: cp for cp in session.scalars(select(LogCheckpoint))}
        session.expunge_all()
    for cp in already:
        if cp.seq not in stored or not cp.same_as(stored[cp.seq]):
            raise click.ClickException(
                f"{path} keeps checkpoint #{cp.seq}, which the database does not hold as kept: "
                "nothing appended; run `handoff audit verify --checkpoints` on it"
            )
    last = already[-1].seq if already else 0
    added = append_kept(path, [stored[seq] for seq in sorted(stored) if seq > last])
    newest = max(stored, default=last)
    click.echo(f"kept {added} new checkpoint(s) in {path} (through #{newest})", err=True)


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
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=default_jobs,
    show_default="every core, up to 4",
    help="Worker processes making the lines (1: this process alone); the same bytes.",
)
@click.pass_obj
def export(
    obj: _Context,
    start: datetime | None,
    end: datetime | None,
    fmt: str,
    out: Path | None,
    user: str,
    database_url: str | None,
    jobs: int,
) -> None:
    """Export events as FHIR AuditEvent NDJSON (IHE BALP) or CSV; the export is itself logged."""
    if start and end and end <= start:
        raise click.BadParameter("--to must come after --from")
    db = obj.database(database_url)
    with obj.app.app_context():  # the signing key, for the checkpoint the export may complete
        if out:
            with out.open("w", encoding="utf-8", newline="") as handle:
                result = run_export(
                    db,
                    handle,
                    fmt=fmt,
                    start=start,
                    end=end,
                    user=user,
                    destination=str(out),
                    jobs=jobs,
                )
        else:
            # sys.stdout, as click's get_text_stream("stdout") (deprecated in Click 8.5) gave it
            result = run_export(db, sys.stdout, fmt=fmt, start=start, end=end, user=user, jobs=jobs)
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
