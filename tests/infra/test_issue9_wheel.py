"""Issue 9 item 22: an installed wheel (not editable) runs the app and every rules command on
the default pack, far from any checkout.

The wheel is built from a copy of this working tree (``pip wheel --no-deps``), installed
into a fresh virtual environment (the lock's packages first, hash-checked, then the wheel
with ``--no-index --find-links``), and run from an unrelated folder with no Handoff
setting. Building and installing take about half a minute: marked ``slow``, kept in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smartapp.engine import load_pack
from tests.shared import SCENARIOS_DIR

from .test_issue9_install import REPO, _clean_env, _copy_checkout

pytestmark = pytest.mark.slow

SCENARIOS = SCENARIOS_DIR
P01 = SCENARIOS / "P01-oud-withdrawal.json"
NOW = json.loads((SCENARIOS / "expected.json").read_text())["now"]


@dataclass
class Installed:
    wheel: Path
    bin: Path
    elsewhere: Path  # the working directory: no rules/, no checkout

    def run(
        self, *args: str, env: dict[str, str] | None = None, program: str = "handoff"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / program), *args],
            cwd=self.elsewhere,
            env=_clean_env() | (env or {}),
            capture_output=True,
            text=True,
            timeout=300,
        )


def _run(*args: str | Path, cwd: Path) -> None:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    source = _copy_checkout(root / "source")
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        root / "dist",
        source,
        cwd=root,
    )
    (wheel,) = (root / "dist").glob("handoff-*.whl")
    _run(sys.executable, "-m", "venv", root / "venv", cwd=root)
    python = root / "venv" / "bin" / "python"
    _run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--require-hashes",
        "-r",
        REPO / "requirements.lock",
        cwd=root,
    )
    _run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--find-links",
        root / "dist",
        "handoff",
        cwd=root,
    )
    _run(python, "-m", "pip", "check", cwd=root)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    yield Installed(wheel=wheel, bin=root / "venv" / "bin", elsewhere=elsewhere)


def test_the_wheel_ships_the_default_rules(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        for part in ("packs", "valuesets", "schema"):
            files = sorted(p for p in (REPO / "rules" / part).iterdir() if p.is_file())
            assert files
            for path in files:
                name = f"smartapp/default_rules/{part}/{path.name}"
                assert name in names, name
                assert wheel.read(name) == path.read_bytes(), name
        assert not any(n.startswith("smartapp/default_rules/tests/") for n in names)


def test_installed_rules_commands_run_on_the_default_pack(installed: Installed) -> None:
    pack = load_pack(REPO / "rules" / "packs" / "default.yaml")
    checked = installed.run("rules", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == (
        f"OK id={pack.id} version={pack.version} hash=sha256:{pack.content_hash}\n"
    )

    evaluated = installed.run("rules", "eval", str(P01), "--now", NOW, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    from_checkout = subprocess.run(
        [sys.executable, "-m", "smartapp.rulestools.cli", "eval", str(P01), "--now", NOW, "--json"],
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(evaluated.stdout) == json.loads(from_checkout.stdout)
    expected = json.loads((SCENARIOS / "expected.json").read_text())["cases"][P01.stem]
    kinds = {s["kind"] for s in json.loads(evaluated.stdout)["suggestions"]}
    assert kinds == {s["kind"] for s in expected["expected"]}

    replayed = installed.run("rules", "backtest", str(SCENARIOS), "--workers", "1", "--json")
    assert replayed.returncode == 0, replayed.stderr
    report = json.loads(replayed.stdout)
    assert report["pack"]["hash"] == f"sha256:{pack.content_hash}"
    assert report["patients"] == len(list(SCENARIOS.glob("P*.json")))

    cases = installed.run("rules", "test", str(REPO / "rules" / "tests"))
    assert cases.returncode == 0, cases.stdout[-2000:]
    assert cases.stdout.splitlines()[-1].endswith(" passed, 0 failed")

    schema = installed.run("rules", "schema")
    assert schema.returncode == 0
    assert schema.stdout == (REPO / "rules" / "schema" / "pack.schema.json").read_text()


def test_installed_commands_say_what_a_wheel_lacks_and_which_setting_to_use(
    installed: Installed,
) -> None:
    no_cases = installed.run("rules", "test")
    assert no_cases.returncode == 1 and "Traceback" not in no_cases.stderr
    assert "HANDOFF_RULES_DIR" in no_cases.stderr and "default_rules/tests" in no_cases.stderr
    with_dir = installed.run("rules", "test", env={"HANDOFF_RULES_DIR": str(REPO / "rules")})
    assert with_dir.returncode == 0, with_dir.stdout[-2000:]

    write = installed.run("rules", "schema", "--write")
    assert write.returncode == 2 and "HANDOFF_RULES_DIR" in write.stderr

    missing = installed.run("rules", "check", env={"HANDOFF_RULES_DIR": "/nonexistent/rules"})
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "/nonexistent/rules: rules directory not found" in missing.stderr


APP_SCRIPT = """
import json, sys, smartapp
from smartapp import create_app
launch, instance = sys.argv[1], sys.argv[2]
app = create_app({"DEMO": True, "LAUNCH_DIR": launch}, instance_path=instance)
pack = app.extensions["handoff"].pack
print(json.dumps({"module": smartapp.__file__, "hash": pack.content_hash,
                  "pack": str(pack.path)}))
"""


def test_the_installed_app_starts_on_the_default_pack(installed: Installed) -> None:
    launch = installed.elsewhere / "launch"
    launch.mkdir(exist_ok=True)
    done = installed.run(
        "-c", APP_SCRIPT, str(launch), str(installed.elsewhere / "instance"), program="python"
    )
    assert done.returncode == 0, done.stderr
    started = json.loads(done.stdout.splitlines()[-1])
    assert started["module"].startswith(str(installed.bin.parent)), started
    assert "site-packages" in started["pack"] and "default_rules" in started["pack"]
    assert started["hash"] == load_pack(REPO / "rules" / "packs" / "default.yaml").content_hash
    assert os.path.isfile(started["pack"])


def test_the_installed_app_names_the_launch_setting_when_it_finds_no_registrations(
    installed: Installed,
) -> None:
    instance = installed.elsewhere / "demo-instance"
    instance.mkdir(exist_ok=True)
    (instance / "config.py").write_text("DEMO = True\n")
    done = installed.run("--instance-path", str(instance), "serve", "--port", "8142")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "registration folder does not exist" in done.stderr
    assert "LAUNCH_DIR (environment HANDOFF_LAUNCH_DIR)" in done.stderr
    launch = installed.elsewhere / "launch-empty"
    launch.mkdir(exist_ok=True)
    upgraded = installed.run(
        "--instance-path", str(instance), "db", "upgrade", env={"HANDOFF_LAUNCH_DIR": str(launch)}
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert "registration" not in upgraded.stderr
