"""Fixtures for the rule engine tests."""

from __future__ import annotations

import pytest

from benchmarks.population import write_population
from smartapp.engine import Chart, Pack, load_pack
from smartapp.engine.chart import ChartItem
from smartapp.engine.history import split_by_patient
from smartapp.rulestools.backtest_input import read_ndjson_files

from .helpers import RULES


@pytest.fixture(scope="session")
def pack() -> Pack:
    """The default pack, loaded once per test session."""
    return load_pack(RULES / "packs" / "default.yaml")


@pytest.fixture(scope="session")
def synthea_charts(tmp_path_factory: pytest.TempPathFactory) -> list[Chart]:
    """The Synthea patients' charts as a bulk export reads them."""
    folder = write_population(tmp_path_factory.mktemp("population") / "ndjson", 100)
    items = read_ndjson_files(sorted(folder.glob("*.ndjson")))
    groups: list[list[ChartItem]] = [g for k, g in split_by_patient(items).items() if k]
    return [Chart.from_items(group) for group in groups]
