"""A program's consult link (issue 11): a `url` telecom of its HealthcareService, https only,
shown on the coach's worklist beside the phone as a call link."""

from __future__ import annotations

from pathlib import Path

from smartapp.catalog import load_catalog

from .helpers import BRIDGE_CLINIC, SAMPLE, at, copy_sample, edit, problems


def test_the_sample_tele_moud_program_has_a_video_and_a_call_link() -> None:
    catalog = load_catalog(SAMPLE)
    tele = catalog.get("bridge-telehealth")
    assert tele.video_link == "https://video.example.org/bridge-tele-moud"
    assert tele.call_link == "tel:5555550113"
    assert catalog.get("bridge-clinic").video_link is None  # no url: no video link


def test_a_consult_link_must_be_https(tmp_path: Path) -> None:
    folder = copy_sample(tmp_path)
    edit(
        folder,
        BRIDGE_CLINIC,
        lambda d: d["telecom"].append({"system": "url", "value": "javascript:alert(1)"}),
    )
    messages = at(problems(folder), BRIDGE_CLINIC, "telecom[1].value")
    assert messages and "https://" in messages[0]
