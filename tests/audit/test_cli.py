"""The rest of `handoff audit`: the public key for auditors, checkpoints on demand, and the
group mounted under the main `handoff` command."""

from __future__ import annotations

import stat

import click
from click.testing import CliRunner

from smartapp.audit import log as referral_log
from smartapp.audit.cli import audit
from smartapp.audit.signing import load_public_key
from smartapp.cli import cli
from tests.audit.conftest import fill, open_log


def test_public_key_then_checkpoint_then_verify(tmp_path, monkeypatch):
    # The demo: the key may be generated beside the data, and verify may default to it
    # (issue 9 item 29: outside the demo both are refused, see test_issue9_kept_checkpoints).
    monkeypatch.setenv("HANDOFF_DEMO", "true")
    instance = tmp_path / "instance"
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    db = open_log(url, signer=None)  # written by something without the key, e.g. a script
    fill(db, 5)
    runner = CliRunner()
    base = ["--instance-path", str(instance)]

    exported = tmp_path / "auditor.pem"
    result = runner.invoke(audit, [*base, "public-key", "--out", str(exported)])
    assert result.exit_code == 0, result.output
    key_file = instance / "audit-signing-key.pem"  # generated on first use, private
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "PRIVATE" not in exported.read_text()
    assert load_public_key(exported) is not None

    result = runner.invoke(audit, [*base, "checkpoint", "--database-url", url])
    assert result.exit_code == 0 and result.stdout.startswith("checkpoint #5 ")

    result = runner.invoke(audit, ["verify", "--database-url", url, "--public-key", str(exported)])
    assert result.exit_code == 0 and result.stdout.startswith("OK: 5 events, 1 checkpoints")
    # The app's own key is the default when no --public-key is given.
    result = runner.invoke(audit, [*base, "verify", "--database-url", url])
    assert result.exit_code == 0, result.output
    with db.session() as session:  # verifying reads only: it appends nothing
        assert len(referral_log.events(session)) == 5
    db.engine.dispose()


def test_checkpointed_log_without_a_key_is_a_usage_error(tmp_path, sqlite_db, sqlite_url):
    fill(sqlite_db, 10)  # one checkpoint, signed by a key this instance does not have
    result = CliRunner().invoke(
        audit, ["--instance-path", str(tmp_path / "empty"), "verify", "--database-url", sqlite_url]
    )
    assert result.exit_code == 2 and "pass --public-key PEM" in result.output


def test_mounts_under_handoff(sqlite_db, sqlite_url, public_key_file):
    """`handoff audit` is this group (smartapp/cli.py imports it when it runs)."""
    fill(sqlite_db, 3)
    result = CliRunner().invoke(
        cli,
        ["audit", "verify", "--database-url", sqlite_url, "--public-key", str(public_key_file)],
    )
    assert result.exit_code == 0 and result.stdout.startswith("OK: 3 events")
    assert cli.get_command(click.Context(cli), "audit") is audit
