"""What Handoff checks before it serves anyone, and how it keeps its files private.

A mistake in the settings (no public URL, no registration, a client secret missing from the
environment, keys beside the data) stops the start with one message naming the setting, rather
than failing at a physician's first launch. Data and key files are created 0600 in 0700 folders.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import click


class StartupError(click.ClickException):
    """Handoff cannot start as configured; the message names the setting to fix. A
    ClickException so every `handoff` command prints it without a traceback (exit 1)."""


PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def private_folder(path: Path, tighten: bool = True) -> Path:
    """Create `path` (and its parents) 0700; an existing folder of Handoff's own is tightened
    to 0700 when `tighten` (a folder someone else chose, e.g. /var/lib, is left alone)."""
    if not path.exists():
        path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        path.chmod(PRIVATE_FOLDER)  # mkdir's mode is reduced by the umask
    elif tighten and stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(PRIVATE_FOLDER)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty and 0600 if missing, else make it 0600 (files made before)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE)
    os.close(fd)
    path.chmod(PRIVATE_FILE)
    return path


def write_new_private_file(path: Path, text: str) -> bool:
    """Write `text` to `path` only if it does not exist yet, atomically and 0600 from the first
    byte; False when another process got there first (its file stands, read it)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.link(temporary, path)  # fails if `path` exists: never two different secrets
        return True
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)


def inside(path: Path, folder: Path) -> bool:
    """True when `path` is `folder` or lies below it (both resolved)."""
    return path.resolve().is_relative_to(folder.resolve())
