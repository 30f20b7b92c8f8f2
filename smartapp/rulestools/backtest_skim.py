"""What pass 2 of a population's backtest (``backtest_bucket``) reads of a line before it
parses it: the resource's type and id, whose it is and its codes, enough to tell whether
the packs' rules can ever read it.

Most of a population's lines are resources no rule reads (vital signs, most labs and
conditions): their chart checks only their key and whose they are, and keeps their line
as read. msgspec's typed decoder reads just these fields and skips the rest, checking it
as JSON all the same, at about a third of the cost of building the whole resource with
orjson. Any line it does not take as plainly as orjson would (not ASCII, malformed, an
element of an unexpected shape, nested too deep) is parsed in full, the usual way.

One difference remains, on purpose: in an element this reader skips, a number too large
for a float (``1e999``) is JSON here but refused by orjson. Such a resource, never read,
is left out instead of stopping the backtest (the in-memory reading and Spark, which parse
every line in full, stop at it); read again (a second version of its key), it stops it as
the usual reading would.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["SKIM_ERRORS", "Head", "codes_of_head", "read_head"]


class _Coding(msgspec.Struct, gc=False):
    system: Any = None
    code: Any = None


class _Concept(msgspec.Struct, gc=False):
    coding: list[_Coding] | None = None


class _Reference(msgspec.Struct, gc=False):
    reference: Any = None


class Head(msgspec.Struct, gc=False):
    """The elements a left-out resource is checked by (the rest of its line is skipped)."""

    resourceType: Any = None  # noqa: N815 (FHIR's name)
    id: Any = None
    subject: _Reference | None = None
    code: _Concept | None = None
    patient: _Reference | None = None


#: The structs are not tracked by the cyclic collector (``gc=False``): decoded from JSON,
#: they hold strings and each other as a tree, never a cycle (a tenth of the skim's time).

#: A line's head (msgspec.DecodeError, its ValidationError among them, when it is not one).
read_head = msgspec.json.Decoder(Head).decode

#: What reading a head may raise: the line then takes the usual way (parsed in full).
SKIM_ERRORS = (msgspec.DecodeError, RecursionError, AttributeError, KeyError, TypeError)


def codes_of_head(head: Head) -> tuple[tuple[str, str], ...]:
    """``coding_tuple`` of the resource's ``code`` (one coding, the common case, without a
    generator: half the time, on every skimmed line)."""
    concept = head.code
    if concept is None or not concept.coding:
        return ()
    coding = concept.coding
    if len(coding) == 1:
        system, code = coding[0].system, coding[0].code
        return ((system, code),) if system.__class__ is str and code.__class__ is str else ()
    return tuple(
        (c.system, c.code) for c in coding if c.system.__class__ is str and c.code.__class__ is str
    )
