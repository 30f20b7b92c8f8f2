"""How a referral names a catalog program in words, and back (one place for the screen, the
amendment, the worklist, the partner pages and the discharge sheet)."""

from __future__ import annotations

from smartapp.catalog import load_catalog
from smartapp.config import SHIPPED_CATALOG


def test_a_program_by_its_label_and_back():
    catalog = load_catalog(SHIPPED_CATALOG / "sample")
    program = catalog.programs()[0]
    assert program.label == f"{program.name} ({program.phone})"
    assert catalog.label(program.id) == program.label
    assert catalog.label("no-such-program") is None
    for words in (program.id, program.name, program.label):
        assert catalog.named(words) == program
    assert catalog.named("") is None and catalog.named("Somewhere else") is None
