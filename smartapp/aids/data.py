"""The aids' items as data (`rules/aids/cows.yaml`, `rules/aids/dsm5-oud.yaml`, owned by
informatics) and their scoring. Pure: answers in, a total and its band out; anything missing,
unknown or out of range is refused with the reason in words (never guessed)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

COWS_FILE = "cows.yaml"
DSM5_FILE = "dsm5-oud.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Band(_Model):
    """A range of totals (both ends included) and its name."""

    code: str
    label: str
    min: int = Field(ge=0)
    max: int = Field(ge=0)


class Answer(_Model):
    score: int = Field(ge=0)
    text: str


class Item(_Model):
    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    title: str
    hint: str = ""
    answers: tuple[Answer, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _scores(self) -> Item:
        scores = [a.score for a in self.answers]
        if 0 not in scores or len(set(scores)) != len(scores):
            raise ValueError(f"{self.id}: answers need a score of 0 and distinct scores")
        return self


class Criterion(_Model):
    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    text: str
    note: str = ""


def _band_of(bands: tuple[Band, ...], total: int) -> Band:
    return next(b for b in bands if b.min <= total <= b.max)


def _check_bands(bands: tuple[Band, ...], top: int, what: str) -> None:
    """The bands cover 0..top, in order, without gaps or overlaps."""
    expected = 0
    for band in bands:
        if band.min != expected or band.max < band.min:
            raise ValueError(f"{what}: band {band.code} should start at {expected}")
        expected = band.max + 1
    if expected != top + 1:
        raise ValueError(f"{what}: the bands end at {expected - 1}, the maximum is {top}")


class CowsScale(_Model):
    """The COWS form: its items (each answer with its score) and the bands of the total."""

    id: str
    version: int
    title: str
    source: str
    instructions: str
    items: tuple[Item, ...] = Field(min_length=1)
    bands: tuple[Band, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CowsScale:
        if len({i.id for i in self.items}) != len(self.items):
            raise ValueError("cows: item ids must be unique")
        _check_bands(self.bands, self.maximum, "cows")
        return self

    @property
    def maximum(self) -> int:
        return sum(max(a.score for a in item.answers) for item in self.items)

    def band(self, total: int) -> Band:
        return _band_of(self.bands, total)


class Dsm5Checklist(_Model):
    """The DSM-5 OUD criteria and the severity bands of the number met."""

    id: str
    version: int
    title: str
    source: str
    instructions: str
    criteria: tuple[Criterion, ...] = Field(min_length=1)
    bands: tuple[Band, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Dsm5Checklist:
        if len({c.id for c in self.criteria}) != len(self.criteria):
            raise ValueError("dsm5: criterion ids must be unique")
        _check_bands(self.bands, len(self.criteria), "dsm5")
        return self

    def band(self, count: int) -> Band:
        return _band_of(self.bands, count)


class AidInputError(ValueError):
    """What was sent cannot be scored; the message says why, in words."""


class CowsScore(_Model):
    total: int
    band: Band
    answers: Mapping[str, int]  # item id -> the score chosen

    def words(self) -> str:
        return f"COWS {self.total} ({self.band.label})"


class Dsm5Result(_Model):
    met: tuple[str, ...]  # criterion ids, in the checklist's order
    count: int
    band: Band

    def words(self, checklist: Dsm5Checklist) -> str:
        return (
            f"{self.count} of {len(checklist.criteria)} DSM-5 OUD criteria met ({self.band.label})"
        )


def score_cows(scale: CowsScale, sent: Mapping[str, str]) -> CowsScore:
    """The total of one answer per item (`sent`: item id -> the score as text). Refused when
    an item is unanswered or its score is not one of that item's answers."""
    missing = [item.title for item in scale.items if not (sent.get(item.id) or "").strip()]
    if missing:
        raise AidInputError("Answer every item: " + ", ".join(missing) + ".")
    answers: dict[str, int] = {}
    for item in scale.items:
        text = sent[item.id].strip()
        allowed = {a.score for a in item.answers}
        if not (text.isascii() and text.isdigit()) or int(text) not in allowed:
            raise AidInputError(f"{item.title}: not one of the scale's answers.")
        answers[item.id] = int(text)
    total = sum(answers.values())
    return CowsScore(total=total, band=scale.band(total), answers=answers)


def check_dsm5(checklist: Dsm5Checklist, ticked: list[str]) -> Dsm5Result:
    """The criteria ticked (ids) and their severity; an unknown or repeated id is refused."""
    known = {c.id for c in checklist.criteria}
    unknown = [t for t in ticked if t not in known]
    if unknown or len(set(ticked)) != len(ticked):
        raise AidInputError("The checklist sent criteria it does not hold.")
    met = tuple(c.id for c in checklist.criteria if c.id in set(ticked))
    return Dsm5Result(met=met, count=len(met), band=checklist.band(len(met)))


@lru_cache(maxsize=8)
def _load(path: Path, kind: str) -> CowsScale | Dsm5Checklist:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    model = CowsScale if kind == "cows" else Dsm5Checklist
    return model.model_validate(raw)


def aids_dir(rules: Path) -> Path:
    """`<rules>/aids`, else the aids Handoff ships (a site's rules folder without aids)."""
    from smartapp.engine.location import builtin_rules_dir

    here = rules / "aids"
    return here if (here / COWS_FILE).is_file() else builtin_rules_dir() / "aids"


def cows_scale(rules: Path) -> CowsScale:
    scale = _load(aids_dir(rules) / COWS_FILE, "cows")
    assert isinstance(scale, CowsScale)
    return scale


def dsm5_checklist(rules: Path) -> Dsm5Checklist:
    checklist = _load(aids_dir(rules) / DSM5_FILE, "dsm5")
    assert isinstance(checklist, Dsm5Checklist)
    return checklist
