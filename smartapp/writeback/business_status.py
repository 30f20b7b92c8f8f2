"""The Task.businessStatus steps of a warm handoff, as data (catalog/lifecycle.yaml).

The shared spec and the HL7 SDOH closed-loop pattern name no codes for the steps between
accepted and completed (contacted, first appointment scheduled, first appointment attended,
engaged at 30 days), so they are Handoff's own, read from a YAML file a site may change
(setting LIFECYCLE_FILE). The text is always present; the order says which step is later.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "catalog" / "lifecycle.yaml"
DEFAULT_SYSTEM = "urn:handoff:task-business-status"


@dataclass(frozen=True)
class BusinessStatus:
    """One step: `code` in `system`, and `text` in words (always sent)."""

    code: str
    text: str
    system: str | None = DEFAULT_SYSTEM

    def concept(self) -> dict[str, Any]:
        """The step as a FHIR CodeableConcept (Task.businessStatus)."""
        coding: dict[str, Any] = {"code": self.code, "display": self.text}
        if self.system:
            coding = {"system": self.system} | coding
        return {"coding": [coding], "text": self.text}

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "text": self.text, "system": self.system}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BusinessStatus:
        return cls(code=data["code"], text=data["text"], system=data.get("system"))


@dataclass(frozen=True)
class Steps:
    """The steps of one lifecycle file, in order."""

    system: str | None
    steps: tuple[BusinessStatus, ...]

    def get(self, code: str) -> BusinessStatus:
        """The step with this code; an unknown code keeps its code as its words."""
        for step in self.steps:
            if step.code == code:
                return step
        return BusinessStatus(code=code, text=code, system=self.system)

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
        if not isinstance(item, dict) or not item.get("code") or not item.get("text"):
            raise ValueError(f"each lifecycle step needs a code and a text, not {item!r}")
        steps.append(BusinessStatus(str(item["code"]), str(item["text"]), system))
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
