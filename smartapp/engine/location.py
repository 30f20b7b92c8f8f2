"""Where the rules are: one setting, ``RULES_DIR`` (environment: ``HANDOFF_RULES_DIR``).

A rules directory holds ``packs/default.yaml`` (the pack the app runs) and ``valuesets/``
(and, in the repository, ``schema/`` and ``tests/``). Unset, Handoff uses the rules it
ships: ``rules/`` of a source checkout (an editable install reads it too), or its copy
inside an installed wheel, ``smartapp/default_rules/`` (``setup.py`` puts it there).
"""

from __future__ import annotations

import os
from pathlib import Path

RULES_DIR_ENV = "HANDOFF_RULES_DIR"
#: ``rules/`` beside ``smartapp/``: the informatics-owned source in a checkout.
CHECKOUT_RULES = Path(__file__).resolve().parents[2] / "rules"
#: The copy of the default rules inside an installed package (absent in a checkout).
PACKAGED_RULES = Path(__file__).resolve().parents[1] / "default_rules"


class RulesDirError(Exception):
    """The rules directory setting names no usable directory; the message says which."""


def builtin_rules_dir() -> Path:
    """The rules Handoff ships: the copy in an installed wheel, else the checkout's."""
    return PACKAGED_RULES if PACKAGED_RULES.is_dir() else CHECKOUT_RULES


def is_packaged(rules: Path) -> bool:
    """Whether ``rules`` is the read-only copy inside the installed package."""
    return rules.resolve() == PACKAGED_RULES.resolve()


def rules_dir(setting: str | os.PathLike[str] | None = None) -> Path:
    """``setting`` (the app's RULES_DIR), else ``$HANDOFF_RULES_DIR``, else the built-in."""
    value = setting or os.environ.get(RULES_DIR_ENV)
    return Path(value).expanduser() if value else builtin_rules_dir()


def default_pack(rules: Path) -> Path:
    """The pack the app runs: ``<rules>/packs/default.yaml``."""
    return rules / "packs" / "default.yaml"


def check_rules_dir(rules: Path, setting_given: bool) -> None:
    """Raise RulesDirError when ``rules`` is not a directory, naming the setting to fix."""
    if rules.is_dir():
        return
    if setting_given:
        raise RulesDirError(
            f"{rules}: rules directory not found (RULES_DIR, environment {RULES_DIR_ENV}); "
            "it must hold packs/default.yaml and valuesets/"
        )
    raise RulesDirError(
        f"{rules}: the rules Handoff ships are missing from this installation; set "
        f"{RULES_DIR_ENV} (RULES_DIR) to a rules directory holding packs/default.yaml "
        "and valuesets/"
    )
