"""Which sensitivity a decision about the patient carries: a pure step right after the engine.

Everything Handoff writes is SUD information; it is opioid use disorder information (label
``OPIOIDUD`` instead of ``SUD``, system v3-ActCode) when any suggestion shown is
opioid-specific (``kinds.OPIOID_KINDS``). The screen records this with the suggestions it
shows and the write-back labels the resources from it, so the choice is made here once.
"""

from __future__ import annotations

from collections.abc import Iterable

from .kinds import OPIOID_KINDS

#: v3-ActCode sensitivity of substance use disorder information.
SUD = "SUD"
#: v3-ActCode sensitivity of opioid use disorder information.
OPIOIDUD = "OPIOIDUD"


def is_opioid(kinds: Iterable[str]) -> bool:
    """Whether suggestions of these kinds make the decision opioid use disorder information."""
    return any(kind in OPIOID_KINDS for kind in kinds)


def sensitivity(kinds: Iterable[str]) -> str:
    """The sensitivity code for a decision on suggestions of these kinds."""
    return OPIOIDUD if is_opioid(kinds) else SUD
