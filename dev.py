#!/usr/bin/env python3
"""Set-up and the everyday commands, from a fresh machine with only python3 and pip.

    python3 dev.py demo            # install, start the sandbox EHR + Handoff, print the chart URL
    python3 dev.py test            # install (browser too), the checks, every test (CI)
    python3 dev.py test --fast     # install, the unit tier only (no server, no browser)
    python3 dev.py handoff ARGS    # install, then run the `handoff` command (e.g. rules check)
    python3 dev.py lock            # re-resolve requirements*.lock after editing pyproject.toml

Creates `.venv/` beside this file and installs into it exactly the versions of the lock
files, checked against their hashes (`requirements.lock` for the app and the `handoff`
command, `requirements-test.lock` for the tests), then Handoff itself; it re-installs only
when pyproject.toml or a lock file changes. `test` also installs Debian's chromium for the
browser tests, and runs the checks before the tests: ruff (lint and format), import-linter
(the layers, contracts in pyproject.toml) and mypy. Arguments after `test` go to pytest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
CHROMIUM = "/usr/bin/chromium"
# The locks: every package with its exact version and hashes, resolved from pyproject.toml.
APP_LOCK = "requirements.lock"  # the dependencies
TEST_LOCK = "requirements-test.lock"  # the dependencies and the extras test, postgres, spark
LOCKS = {APP_LOCK: "", TEST_LOCK: "[test,postgres,spark]"}
# The checks `test` runs before pytest, each a command of the virtual environment.
CHECKS = (
    ("ruff", "check", "."),
    ("ruff", "format", "--check", "."),
    ("lint-imports", "--no-cache", "--no-logo"),
    ("mypy", "smartapp"),
)
# `test --fast`: the tier of tests that start no server, no process and no browser.
FAST_MARK = "unit"
# pip-compile, for `lock` only (in a throw-away venv): its major version fixes the format.
PIP_TOOLS = "pip-tools>=7.4,<8"


def run(*args: str, **kwargs) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, **kwargs)


def as_root(*args: str) -> list[str]:
    if os.geteuid() == 0:
        return list(args)
    if shutil.which("sudo"):
        return ["sudo", *args]
    sys.exit(f"'{' '.join(args)}' needs root; run it as root or install sudo.")


def ensure_venv() -> None:
    if (BIN / "python").exists():
        return
    try:
        run(sys.executable, "-m", "venv", str(VENV))
    except subprocess.CalledProcessError:
        # Debian ships venv's ensurepip separately.
        shutil.rmtree(VENV, ignore_errors=True)
        version = f"python3.{sys.version_info.minor}-venv"
        run(*as_root("apt-get", "update", "-qq"))
        run(*as_root("apt-get", "install", "-y", "-qq", version))
        run(sys.executable, "-m", "venv", str(VENV))


def install_digest(lock: str) -> str:
    """What the install stamp records: pyproject.toml and the lock, so editing either
    re-installs."""
    digest = hashlib.sha256()
    for name in ("pyproject.toml", lock):
        data = (ROOT / name).read_bytes()
        digest.update(f"{name}:{len(data)}\n".encode() + data)
    return digest.hexdigest()


def ensure_installed(lock: str) -> None:
    """The lock's exact versions (hashes checked), then Handoff itself, editable."""
    ensure_venv()
    digest = install_digest(lock)
    stamp = VENV / ".handoff-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    pip = (str(BIN / "python"), "-m", "pip", "install", "-q")
    run(*pip, "--require-hashes", "-r", lock, cwd=ROOT)
    run(*pip, "--no-deps", "-e", ".", cwd=ROOT)
    stamp.write_text(digest)


def ensure_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    run(*as_root("apt-get", "update", "-qq"), env=env)
    run(*as_root("apt-get", "install", "-y", "-qq", "chromium", "fonts-liberation"), env=env)


def ensure_test_tools() -> None:
    """axe-core (accessibility checks in the browser tests), from the npm registry."""
    tools = ROOT / "tests" / "js"
    if not (tools / "node_modules" / "axe-core").exists():
        if not shutil.which("npm"):
            env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
            run(*as_root("apt-get", "update", "-qq"), env=env)
            run(*as_root("apt-get", "install", "-y", "-qq", "nodejs", "npm"), env=env)
        run("npm", "ci", "--no-audit", "--no-fund", cwd=tools)


def demo(args: list[str]) -> None:
    ensure_installed(APP_LOCK)
    os.execv(str(BIN / "handoff"), [str(BIN / "handoff"), "demo", *args])


def handoff(args: list[str]) -> None:
    """The `handoff` command from the checkout, whatever the shell's PATH."""
    ensure_installed(APP_LOCK)
    os.execv(str(BIN / "handoff"), [str(BIN / "handoff"), *args])


def lock(args: list[str]) -> None:
    """Resolve pyproject.toml's dependencies again into the lock files (from PyPI)."""
    with tempfile.TemporaryDirectory(prefix="handoff-lock-") as tmp:
        tools = Path(tmp) / "venv"
        run(sys.executable, "-m", "venv", str(tools))
        run(str(tools / "bin" / "python"), "-m", "pip", "install", "-q", PIP_TOOLS)
        for name, extras in LOCKS.items():
            options = [f"--extra={e}" for e in extras.strip("[]").split(",") if e]
            run(
                str(tools / "bin" / "pip-compile"),
                "-q",
                "--generate-hashes",
                "--strip-extras",
                "--no-emit-index-url",
                "--no-emit-find-links",
                "--allow-unsafe",
                *options,
                *args,
                "--output-file",
                name,
                "pyproject.toml",
                cwd=ROOT,
                env=os.environ | {"CUSTOM_COMPILE_COMMAND": "python3 dev.py lock"},
            )


def test(args: list[str]) -> None:
    """Every check and every test (CI's one command); with --fast, the unit tier alone."""
    ensure_installed(TEST_LOCK)
    pytest = [str(BIN / "python"), "-m", "pytest"]
    if "--fast" in args:
        args = [a for a in args if a != "--fast"]
        os.execv(pytest[0], [*pytest, "-m", FAST_MARK, *args])
    ensure_chromium()
    ensure_test_tools()
    for tool, *options in CHECKS:
        run(str(BIN / tool), *options, cwd=ROOT)
    os.execv(pytest[0], [*pytest, *args])


def main() -> None:
    commands = {"demo": demo, "test": test, "handoff": handoff, "lock": lock}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    os.chdir(ROOT)
    try:
        commands[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as exc:
        sys.exit(f"failed (exit {exc.returncode}): {' '.join(map(str, exc.cmd))}")


if __name__ == "__main__":
    main()
