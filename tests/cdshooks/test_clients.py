"""Trusted CDS clients as data (launch/cds-clients/*.yaml): a mistake names its file and field;
the samples shipped in launch/cds-clients/samples/ load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from smartapp.cdshooks.clients import CdsClientError, load_clients
from smartapp.config import REPO_ROOT

GOOD = {
    "id": "ehr",
    "name": "EHR",
    "issuer": "https://ehr.example/cds",
    "registration": "ehr",
    "jwks_url": "https://ehr.example/jwks",
}


def write(folder: Path, data: dict, name: str = "ehr.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(data))
    return folder


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"jwks_file": "keys.json"}, "exactly one of jwks_url or jwks_file"),
        ({"algorithms": ["HS256"]}, "algorithms"),
        ({"origins": ["*"]}, "origins"),
        ({"jwks_url": "ftp://x"}, "jwks_url"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_mistake_names_the_file_and_field(tmp_path, change, named):
    folder = write(tmp_path, GOOD | change)
    with pytest.raises(CdsClientError) as raised:
        load_clients(folder)
    assert "ehr.yaml" in str(raised.value) and named in str(raised.value)


def test_a_jwks_file_is_read_and_two_files_may_not_trust_one_issuer(tmp_path):
    (tmp_path / "keys.json").write_text(json.dumps({"keys": []}))
    data = {k: v for k, v in GOOD.items() if k != "jwks_url"} | {"jwks_file": "keys.json"}
    clients = load_clients(write(tmp_path, data))
    found = clients.by_issuer(GOOD["issuer"])
    assert found is not None and found.jwks == {"keys": []}
    write(tmp_path, GOOD | {"id": "other"}, "other.yaml")
    with pytest.raises(CdsClientError, match="same issuer"):
        load_clients(tmp_path)


def test_the_samples_load(tmp_path):
    for sample in (REPO_ROOT / "launch" / "cds-clients" / "samples").glob("*.yaml"):
        folder = tmp_path / sample.stem
        folder.mkdir()
        shutil.copy(sample, folder / sample.name)
        data = yaml.safe_load(sample.read_text())
        if data.get("jwks_file"):
            (folder / data["jwks_file"]).write_text(json.dumps({"keys": []}))
        assert list(load_clients(folder))
