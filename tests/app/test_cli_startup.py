"""`handoff`'s command groups of other packages are imported only when one runs: the
population backtest's start-up is serial work before its workers begin."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from smartapp.cli import cli

PROBE = """
import sys
from smartapp.cli import cli
cli(["rules", "--help"], prog_name="handoff", standalone_mode=False)
print(sorted(m for m in ("smartapp.audit.cli", "smartapp.partners.cli", "sqlalchemy")
             if m in sys.modules))
"""


def test_rules_commands_start_without_the_audit_and_partner_tools() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_help_lists_every_command_group_and_each_runs() -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["--help"])
    assert listed.exit_code == 0
    for group in ("audit", "partners", "rules"):
        assert f"\n  {group} " in listed.output
        shown = runner.invoke(cli, [group, "--help"])
        assert shown.exit_code == 0 and "Usage: cli " + group in shown.output
    assert runner.invoke(cli, ["nonesuch"]).exit_code == 2
