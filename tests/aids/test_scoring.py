"""The aids' data (rules/aids/*.yaml) and their scoring, from the data files themselves."""

from __future__ import annotations

import pytest

from smartapp.aids import data
from smartapp.engine.location import CHECKOUT_RULES

RULES = CHECKOUT_RULES


@pytest.fixture(scope="module")
def scale() -> data.CowsScale:
    return data.cows_scale(RULES)


@pytest.fixture(scope="module")
def checklist() -> data.Dsm5Checklist:
    return data.dsm5_checklist(RULES)


def test_cows_has_the_eleven_items_of_wesson_and_ling(scale):
    assert [i.id for i in scale.items] == [
        "pulse", "sweating", "restlessness", "pupils", "aches", "nose",
        "gi", "tremor", "yawning", "anxiety", "gooseflesh",
    ]  # fmt: skip
    assert "Wesson" in scale.source and "2003" in scale.source
    # each item's answers as published: the highest score per item, and the form's maximum
    highest = [max(a.score for a in i.answers) for i in scale.items]
    assert highest == [4, 4, 5, 5, 4, 4, 5, 4, 4, 4, 5]
    assert scale.maximum == 48


def answers(scale: data.CowsScale, pick) -> dict[str, str]:
    return {item.id: str(pick(item)) for item in scale.items}


@pytest.mark.parametrize(
    ("total", "band"),
    [(0, "none"), (4, "none"), (5, "mild"), (12, "mild"), (13, "moderate"), (24, "moderate"),
     (25, "moderately-severe"), (36, "moderately-severe"), (37, "severe"), (48, "severe")],
)  # fmt: skip
def test_cows_bands_at_each_edge(scale, total, band):
    assert scale.band(total).code == band


def test_cows_total_is_the_sum_of_the_answers(scale):
    lowest = data.score_cows(scale, answers(scale, lambda i: 0))
    assert (lowest.total, lowest.band.code) == (0, "none")
    highest = data.score_cows(scale, answers(scale, lambda i: max(a.score for a in i.answers)))
    assert (highest.total, highest.band.label) == (48, "severe")
    # the second answer of each item: 1+1+1+1+1+1+1+1+1+1+3 = 13, moderate
    second = data.score_cows(scale, answers(scale, lambda i: i.answers[1].score))
    assert (second.total, second.band.code) == (13, "moderate")
    assert second.words() == "COWS 13 (moderate)"


def test_cows_refuses_missing_and_out_of_range_answers(scale):
    sent = answers(scale, lambda i: 0)
    sent["tremor"] = ""
    with pytest.raises(data.AidInputError, match="Tremor"):
        data.score_cows(scale, sent)
    sent = answers(scale, lambda i: 0)
    sent["restlessness"] = "2"  # restlessness scores 0, 1, 3 or 5
    with pytest.raises(data.AidInputError, match="Restlessness"):
        data.score_cows(scale, sent)
    for bad in ("-1", "99", "1.5", "one", "1e1", "\u00b2", " 4 4"):
        sent = answers(scale, lambda i: 0) | {"pulse": bad}
        with pytest.raises(data.AidInputError):
            data.score_cows(scale, sent)


def test_dsm5_has_eleven_criteria_and_the_issue_s_bands(checklist):
    assert len(checklist.criteria) == 11
    assert "DSM-5" in checklist.source
    bands = {n: checklist.band(n).code for n in range(12)}
    assert [bands[n] for n in (0, 1)] == ["not-met", "not-met"]
    assert [bands[n] for n in (2, 3)] == ["mild", "mild"]
    assert [bands[n] for n in (4, 5)] == ["moderate", "moderate"]
    assert all(bands[n] == "severe" for n in range(6, 12))


def test_dsm5_result_and_refusals(checklist):
    ids = [c.id for c in checklist.criteria]
    result = data.check_dsm5(checklist, [ids[9], ids[3], ids[10], ids[0]])
    assert result.count == 4 and result.band.code == "moderate"
    assert result.met == (ids[0], ids[3], ids[9], ids[10])  # in the checklist's order
    assert result.words(checklist) == "4 of 11 DSM-5 OUD criteria met (moderate)"
    assert data.check_dsm5(checklist, []).band.code == "not-met"
    with pytest.raises(data.AidInputError):
        data.check_dsm5(checklist, ["made-up"])
    with pytest.raises(data.AidInputError):
        data.check_dsm5(checklist, [ids[0], ids[0]])


def test_bands_must_cover_the_range():
    with pytest.raises(ValueError, match="band"):
        data.Dsm5Checklist.model_validate(
            {
                "id": "x", "version": 1, "title": "t", "source": "s", "instructions": "i",
                "criteria": [{"id": "a", "text": "a"}, {"id": "b", "text": "b"}],
                "bands": [{"code": "low", "label": "low", "min": 0, "max": 0}],
            }
        )  # fmt: skip
