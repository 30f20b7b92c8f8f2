"""The Task.businessStatus steps of a warm handoff, as data (catalog/lifecycle.yaml).

The shared spec and the HL7 SDOH closed-loop pattern name no codes for the steps between
accepted and completed (contacted, first appointment scheduled, first appointment attended,
engaged at 30 days), so the four steps (`STEPS`) are Handoff's own and fixed (the worklist,
partners and dashboard count them), while the code, system and words each step carries on the
Task are data in catalog/lifecycle.yaml, which a site may change. The text is always present;
the order of `STEPS` says which step is later.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

#: catalog/lifecycle.yaml of a checkout, or its copy inside an installed wheel (setup.py).
_PACKAGED_FILE = Path(__file__).resolve().parents[1] / "default_catalog" / "lifecycle.yaml"
DEFAULT_FILE = (
    _PACKAGED_FILE
    if _PACKAGED_FILE.is_file()
    else Path(__file__).resolve().parents[2] / "catalog" / "lifecycle.yaml"
)
DEFAULT_SYSTEM = "urn:handoff:task-business-status"
#: Handoff's steps between accepted and completed, in lifecycle order.
STEPS = ("contacted", "appointment-scheduled", "appointment-attended", "engaged-30-days")


@dataclass(frozen=True)
class BusinessStatus:
    """One step: `code` in `system`, and `text` in words (always sent); `step` is Handoff's
    own name of the step (one of `STEPS`; the code unless the site's file names another)."""

    code: str
    text: str
    system: str | None = DEFAULT_SYSTEM
    step: str = ""

    def __post_init__(self) -> None:
        if not self.step:
            object.__setattr__(self, "step", self.code)

    def concept(self) -> dict[str, Any]:
        """The step as a FHIR CodeableConcept (Task.businessStatus)."""
        coding: dict[str, Any] = {"code": self.code, "display": self.text}
        if self.system:
            coding = {"system": self.system} | coding
        return {"coding": [coding], "text": self.text}

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "text": self.text, "system": self.system, "step": self.step}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BusinessStatus:
        return cls(
            code=data["code"],
            text=data["text"],
            system=data.get("system"),
            step=data.get("step") or data["code"],
        )


@dataclass(frozen=True)
class Steps:
    """The steps of one lifecycle file, in order."""

    system: str | None
    steps: tuple[BusinessStatus, ...]

    def get(self, step_or_code: str) -> BusinessStatus:
        """The step named so (Handoff's step or the site's code); an unknown one keeps its
        name as its words."""
        for step in self.steps:
            if step_or_code in (step.step, step.code):
                return step
        return BusinessStatus(code=step_or_code, text=step_or_code, system=self.system)

    def words(self) -> dict[str, str]:
        """Each of Handoff's steps in the site's words."""
        return {step.step: step.text for step in self.steps}

    def rank(self, concept: object) -> int | None:
        """The position of a Task.businessStatus (a CodeableConcept) among the steps, by
        code (any system) or by text; None when it is none of them."""
        if not isinstance(concept, dict):
            return None
        codes = {c.get("code") for c in concept.get("coding") or [] if isinstance(c, dict)}
        for index, step in enumerate(self.steps):
            if step.code in codes or (concept.get("text") and concept.get("text") == step.text):
                return index
        return None


def parse_steps(data: object) -> Steps:
    """Steps from the YAML's data (ValueError naming what is wrong)."""
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise ValueError("the lifecycle file needs a `steps` list")
    system = data.get("system")
    steps = []
    for item in data["steps"]:
        if not isinstance(item, dict) or not item.get("step") or not item.get("text"):
            raise ValueError(f"each lifecycle step needs a step and a text, not {item!r}")
        step = str(item["step"])
        steps.append(BusinessStatus(str(item.get("code") or step), str(item["text"]), system, step))
    named = tuple(step.step for step in steps)
    if named != STEPS:
        raise ValueError(f"the lifecycle file must list the steps {', '.join(STEPS)} in order")
    return Steps(system=system, steps=tuple(steps))


@lru_cache(maxsize=8)
def _load(path: str) -> Steps:
    return parse_steps(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def steps(path: str | Path | None = None) -> Steps:
    """The steps of `path` (default catalog/lifecycle.yaml), read once."""
    return _load(str(path or DEFAULT_FILE))


def business_status(code: str, path: str | Path | None = None) -> BusinessStatus:
    """The step with `code`, with its words."""
    return steps(path).get(code)
