#!/usr/bin/env python3
"""Set-up and the two everyday commands, from a fresh machine with only python3 and pip.

    python3 dev.py demo   # install, start the sandbox EHR + Handoff, print the chart URL
    python3 dev.py test   # install (browser too), lint, run every test

Creates `.venv/` beside this file and installs Handoff into it (re-installs only when
pyproject.toml changes). `test` also installs Debian's chromium for the browser tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
CHROMIUM = "/usr/bin/chromium"


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


def ensure_installed(extras: str) -> None:
    ensure_venv()
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / ".handoff-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    run(str(BIN / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip")
    run(str(BIN / "python"), "-m", "pip", "install", "-q", "-e", f".{extras}", cwd=ROOT)
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
    ensure_installed("")
    os.execv(str(BIN / "handoff"), [str(BIN / "handoff"), "demo", *args])


def test(args: list[str]) -> None:
    ensure_installed("[test,postgres]")
    ensure_chromium()
    ensure_test_tools()
    run(str(BIN / "ruff"), "check", ".", cwd=ROOT)
    os.execv(str(BIN / "python"), [str(BIN / "python"), "-m", "pytest", *args])


def main() -> None:
    commands = {"demo": demo, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    os.chdir(ROOT)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
