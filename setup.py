"""Build hook: ship the default rules inside the package, so an installed wheel runs.

``rules/`` stays the informatics-owned source in the repository. At build time its
``packs/``, ``valuesets/``, ``schema/`` and ``aids/`` (the decision aids' items) are copied
into the wheel as
``smartapp/default_rules/``, where ``smartapp.engine.location`` finds them when Handoff
runs from an installed package (a checkout, and an editable install, read ``rules/``).
Likewise ``catalog/``'s sample catalog, the handoff's lifecycle steps and the discharge
sheet's words go in as ``smartapp/default_catalog/`` (a site points CATALOG_DIR and
AFTERCARE_SHEET_DIR at its own).
Everything else about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED_RULES = ("packs", "valuesets", "schema", "aids")
PACKAGED_RULES = Path("smartapp") / "default_rules"
SHIPPED_CATALOG = ("sample", "sheet", "lifecycle.yaml")
PACKAGED_CATALOG = Path("smartapp") / "default_catalog"


class BuildPyWithRules(build_py):
    """``build_py`` that also copies the default rules into the built package."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / PACKAGED_RULES
        for part in SHIPPED_RULES:
            source = ROOT / "rules" / part
            if not source.is_dir():
                raise SystemExit(f"{source}: missing; the wheel must ship the default rules")
            shutil.copytree(source, target / part, dirs_exist_ok=True)
        catalog = Path(self.build_lib) / PACKAGED_CATALOG
        catalog.mkdir(parents=True, exist_ok=True)
        for part in SHIPPED_CATALOG:
            source = ROOT / "catalog" / part
            if source.is_dir():
                shutil.copytree(source, catalog / part, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, catalog / part)
            else:
                raise SystemExit(f"{source}: missing; the wheel must ship the default catalog")


setup(cmdclass={"build_py": BuildPyWithRules})
