"""Issue 9 item 9: one rules setting, honoured by the app and every command; a broken pack
stops the start with the lines ``handoff rules check`` prints, never a traceback.

The setting is ``RULES_DIR`` (``instance/config.py``) or ``HANDOFF_RULES_DIR``: a folder
with ``packs/default.yaml`` and ``valuesets/``. Real apps, real ``handoff`` processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smartapp import create_app
from smartapp.config import REPO_ROOT
from smartapp.startup import StartupError
from tests.shared import SCENARIOS_DIR

RULES = REPO_ROOT / "rules"
P01 = SCENARIOS_DIR / "P01-oud-withdrawal.json"
NOW = "2026-11-20T15:00:00Z"


def site_rules(folder: Path, version: str = "1.0.0-site", broken: bool = False) -> Path:
    """A copy of the default rules with another version (and, if ``broken``, two errors)."""
    shutil.copytree(RULES / "valuesets", folder / "valuesets")
    text = (RULES / "packs" / "default.yaml").read_text()
    text, replaced = re.subn(r"\nversion: [0-9][^\n]*\n", f"\nversion: {version}\n", text, count=1)
    assert replaced == 1
    if broken:
        text = text.replace("valueset: hepatic", "valueset: liver", 1)
        text = text.replace("    when: on_moud\n", "    when: on_mod\n", 1)
    (folder / "packs").mkdir(parents=True)
    (folder / "packs" / "default.yaml").write_text(text)
    return folder


def demo_instance(folder: Path, config: str = "") -> Path:
    """An instance folder in demo mode (no registration or public URL needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.py").write_text("DEMO = True\n" + config)
    return folder


def app_settings(tmp_path: Path) -> dict:
    launch = tmp_path / "launch"
    launch.mkdir(exist_ok=True)
    return {
        "DEMO": True,
        "LAUNCH_DIR": str(launch),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'handoff.sqlite'}",
    }


def handoff(
    *args: str, cwd: Path, env: dict | None = None, module: str = "smartapp.cli"
) -> subprocess.CompletedProcess[str]:
    """A `handoff` process with no HANDOFF_* setting from this shell."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def app_pack_version(app) -> str:
    try:
        return app.extensions["handoff"].pack.version
    finally:
        app.extensions["handoff"].db.engine.dispose()


def test_handoff_rules_dir_is_the_pack_of_the_app_and_of_every_rules_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = site_rules(tmp_path / "site-rules")
    monkeypatch.setenv("HANDOFF_RULES_DIR", str(rules))
    app = create_app(app_settings(tmp_path), instance_path=str(tmp_path / "instance"))
    assert app_pack_version(app) == "1.0.0-site"

    env = {"HANDOFF_RULES_DIR": str(rules)}
    checked = handoff("rules", "check", cwd=tmp_path, env=env)
    assert checked.returncode == 0, checked.stderr
    assert "version=1.0.0-site" in checked.stdout
    evaluated = handoff("rules", "eval", str(P01), "--now", NOW, "--json", cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["pack"]["version"] == "1.0.0-site"
    replayed = handoff(
        "rules", "backtest", str(P01), "--workers", "1", "--json", cwd=tmp_path, env=env
    )
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["pack"]["version"] == "1.0.0-site"


def test_rules_dir_in_the_instance_config_is_read_by_the_app_and_the_commands(
    tmp_path: Path,
) -> None:
    rules = site_rules(tmp_path / "site-rules", version="2.0.0-instance")
    instance = demo_instance(tmp_path / "instance", f"RULES_DIR = {str(rules)!r}\n")
    settings = app_settings(tmp_path)
    del settings["DEMO"]
    app = create_app(settings, instance_path=str(instance))
    assert app_pack_version(app) == "2.0.0-instance"
    for args, env in (
        (("--instance-path", str(instance), "rules", "check"), {}),
        (("rules", "check"), {"HANDOFF_INSTANCE_PATH": str(instance)}),
    ):
        done = handoff(*args, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert "version=2.0.0-instance" in done.stdout
    # the environment variable wins over instance/config.py, as for every setting
    other = site_rules(tmp_path / "other-rules", version="3.0.0-env")
    done = handoff(
        "--instance-path",
        str(instance),
        "rules",
        "check",
        cwd=tmp_path,
        env={"HANDOFF_RULES_DIR": str(other)},
    )
    assert "version=3.0.0-env" in done.stdout, done.stderr


def test_a_broken_pack_stops_the_start_with_the_rules_check_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = site_rules(tmp_path / "broken-rules", broken=True)
    env = {"HANDOFF_RULES_DIR": str(rules)}
    checked = handoff("rules", "check", cwd=tmp_path, env=env)
    assert checked.returncode == 2
    lines = checked.stdout.splitlines()
    assert len(lines) == 2 and all(
        line.startswith(f"{rules}/packs/default.yaml:") for line in lines
    ), lines
    assert any("unknown value set 'liver'" in line for line in lines)

    monkeypatch.setenv("HANDOFF_RULES_DIR", str(rules))
    with pytest.raises(StartupError) as raised:
        create_app(app_settings(tmp_path), instance_path=str(tmp_path / "instance"))
    assert raised.value.message.splitlines()[1:] == lines

    instance = demo_instance(tmp_path / "served")
    for args, module in (
        (("--instance-path", str(instance), "db", "upgrade"), "smartapp.cli"),
        (("--instance-path", str(instance), "serve", "--port", "8131"), "smartapp.cli"),
    ):
        done = handoff(*args, cwd=tmp_path, env=env, module=module)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert all(line in done.stderr.splitlines() for line in lines), done.stderr
        assert len(done.stderr.splitlines()) == len(lines) + 1  # a heading, then the lines

    wsgi = subprocess.run(
        [sys.executable, "-c", "import smartapp.wsgi"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
        | env
        | {"HANDOFF_INSTANCE_PATH": str(instance)},
    )
    assert wsgi.returncode == 3 and "Traceback" not in wsgi.stderr, wsgi.stderr
    assert all(line in wsgi.stderr.splitlines() for line in lines), wsgi.stderr


def test_a_rules_dir_that_is_not_there_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-rules"
    monkeypatch.setenv("HANDOFF_RULES_DIR", str(missing))
    with pytest.raises(StartupError, match="HANDOFF_RULES_DIR") as raised:
        create_app(app_settings(tmp_path), instance_path=str(tmp_path / "instance"))
    assert f"{missing}: rules directory not found" in raised.value.message
    done = handoff("rules", "check", cwd=tmp_path, env={"HANDOFF_RULES_DIR": str(missing)})
    assert done.returncode == 2 and done.stdout == ""
    assert f"{missing}: rules directory not found" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_retired_rules_pack_setting_is_refused_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOFF_RULES_PACK", str(RULES / "packs" / "default.yaml"))
    with pytest.raises(StartupError, match="RULES_PACK .* is no longer read: set RULES_DIR"):
        create_app(app_settings(tmp_path), instance_path=str(tmp_path / "instance"))
    done = handoff(
        "rules",
        "check",
        cwd=tmp_path,
        env={"HANDOFF_RULES_PACK": str(RULES / "packs" / "default.yaml")},
    )
    assert done.returncode == 2 and "is no longer read: set RULES_DIR" in done.stderr
