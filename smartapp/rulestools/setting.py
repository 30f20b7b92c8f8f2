"""The rules directory, one setting for the app and every ``handoff`` command.

``RULES_DIR`` (in ``instance/config.py``, or the environment variable ``HANDOFF_RULES_DIR``,
which wins as for every setting) names a directory holding ``packs/default.yaml`` and
``valuesets/``; unset, Handoff runs the rules it ships (``smartapp.engine.location``). The
app reads it from its config; ``handoff rules ...`` reads the same sources in the same
order, so ``handoff rules check`` checks the very pack the app would run. A pack that does
not load stops the app's start with the lines ``handoff rules check`` prints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Config

from smartapp.config import Defaults, resolve_instance_path
from smartapp.engine import Pack, PackError, load_pack
from smartapp.engine.location import (
    RULES_DIR_ENV,
    RulesDirError,
    check_rules_dir,
    default_pack,
    rules_dir,
)
from smartapp.startup import StartupError

#: The setting an earlier version read (a pack file); now refused rather than ignored.
RETIRED_SETTING = "RULES_PACK"


def settings(instance_path: str | os.PathLike[str] | None = None) -> Config:
    """The settings as ``smartapp.create_app`` reads them: defaults, then the instance
    folder's ``config.py``, then ``HANDOFF_*`` variables (without building an app)."""
    config = Config(str(resolve_instance_path(instance_path)))
    config.from_object(Defaults)
    config.from_pyfile("config.py", silent=True)
    config.from_prefixed_env("HANDOFF")
    return config


def configured_rules_dir(config: Mapping[str, Any]) -> Path:
    """The rules directory the settings name (checked to exist); RulesDirError otherwise."""
    if config.get(RETIRED_SETTING):
        raise RulesDirError(
            f"{RETIRED_SETTING} (HANDOFF_{RETIRED_SETTING}) is no longer read: set RULES_DIR "
            f"(environment {RULES_DIR_ENV}) to the rules directory holding packs/default.yaml "
            "and valuesets/"
        )
    setting = config.get("RULES_DIR")
    rules = rules_dir(setting)
    check_rules_dir(rules, setting_given=bool(setting or os.environ.get(RULES_DIR_ENV)))
    return rules


def pack_problem(exc: PackError) -> str:
    """A pack's errors as ``handoff rules check`` prints them, one per line."""
    lines = [str(issue) for issue in exc.issues]
    return "\n".join([f"{len(lines)} error(s) in the rule pack:", *lines])


def load_app_pack(config: Mapping[str, Any]) -> Pack:
    """The pack the app runs (``<RULES_DIR>/packs/default.yaml``); StartupError when the
    setting names no rules directory or the pack does not load."""
    try:
        rules = configured_rules_dir(config)
        return load_pack(default_pack(rules))
    except RulesDirError as exc:
        raise StartupError(str(exc)) from None
    except PackError as exc:
        raise StartupError(pack_problem(exc)) from None
