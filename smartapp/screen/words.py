"""The pack's words for the screen (``<pack>.words.yaml`` beside the pack: short kind names,
why a variant, what a caution means, why a suggestion is withheld), and filling them in.

Data, not Python: the clinical text lives in ``rules/packs/default.words.yaml`` with its
source. A pack without a words file shows the codes in plain form (never a blank).
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from smartapp.screen.evidence import unbroken_dates


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return data if isinstance(data, dict) else {}


def words_for(pack: Any) -> dict:
    """The words file of the pack (``default.yaml`` -> ``default.words.yaml``), or {}."""
    pack_path = getattr(pack, "path", None)
    if pack_path is None:
        return {}
    path = Path(pack_path).with_suffix(".words.yaml")
    try:
        return _load(str(path), path.stat().st_mtime)
    except (OSError, yaml.YAMLError):
        return {}


def fields_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def fill(templates: Any, values: dict) -> str:
    """The first template whose placeholders are all known, filled in ("" when none is)."""
    options = templates if isinstance(templates, list) else [templates]
    for template in options:
        if isinstance(template, str) and fields_of(template) <= values.keys():
            return template.format(**values)
    return ""


def plain(code: str) -> str:
    """A code in plain form: "recent-methadone" -> "recent methadone"."""
    return code.replace("-", " ")


class Words:
    """The words of one pack, with its parameters for the placeholders."""

    def __init__(self, pack: Any) -> None:
        self.data = words_for(pack)
        document = getattr(pack, "document", None)
        parameters = getattr(document, "parameters", {}) or {}
        self.parameters = {k: v for k, v in parameters.items() if isinstance(v, int | float | str)}

    def section(self, name: str) -> dict:
        found = self.data.get(name)
        return found if isinstance(found, dict) else {}

    def kind(self, kind: str, title: str = "") -> str:
        return str(self.section("kinds").get(kind) or title or plain(kind))

    def variant(self, name: str | None, cautions: list[str]) -> dict:
        """{"short", "why"} of a variant (the raised threshold's words where a caution that
        raises it is present)."""
        if not name:
            return {}
        entry = self.section("variants").get(name)
        if not isinstance(entry, dict):
            return {"short": plain(name), "why": ""}
        raised = any(c in (entry.get("raised_by") or []) for c in cautions)
        why = fill(entry.get("why_raised") if raised else entry.get("why"), self.parameters)
        return {"short": str(entry.get("short") or plain(name)), "why": why}

    def offer(self, kind: str, title: str, variant_short: str = "") -> str:
        template = self.section("offers").get(kind)
        if not isinstance(template, str):
            return self.kind(kind, title).lower()
        return fill(template, {"variant": variant_short}).strip() or template

    def caution(self, code: str) -> dict:
        """{"label", "means"} of a caution."""
        entry = self.section("cautions").get(code)
        if not isinstance(entry, dict):
            return {"label": plain(code).capitalize(), "means": ""}
        means = fill(" ".join(str(entry.get("means") or "").split()), self.parameters)
        return {"label": str(entry.get("label") or plain(code)), "means": means}

    def withheld(self, reason: str, parts: dict) -> str:
        found = fill(self.section("withheld").get(reason), self.parameters | parts)
        return unbroken_dates(found) if found else plain(reason)
