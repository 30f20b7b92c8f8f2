"""Value sets: FHIR R4 ValueSet files (``compose`` only) compiled into code matchers.

Besides plain codes, a concept code may be a *code pattern* (documented in
``rules/README.md``): ``*`` any run of characters, ``?`` exactly one character,
``[1-4]`` one character of a class. ``F11.1*`` is a prefix; ``T40.0X[1-4]?`` is a
T40.0X code with intent digit 1-4 and one 7th character. Patterns match the whole
code as written (dots included, case-sensitive). ``compose.exclude`` removes codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PATTERN_CHARS = frozenset("*?[]")
_CLASS_BODY = re.compile(r"^(?:[A-Za-z0-9](?:-[A-Za-z0-9])?)+$")
VALUESET_ID = r"^[a-z0-9][a-z0-9-]{0,63}$"


def is_pattern(code: str) -> bool:
    """Whether a concept code is a code pattern rather than a literal code."""
    return any(c in PATTERN_CHARS for c in code)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a code pattern to a regex matching the whole code; ValueError if malformed."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = pattern.find("]", i + 1)
            body = pattern[i + 1 : end] if end > 0 else ""
            if not _CLASS_BODY.match(body):
                raise ValueError(f"bad character class in code pattern {pattern!r}")
            out.append(f"[{body}]")
            i = end
        elif char == "]":
            raise ValueError(f"unmatched ']' in code pattern {pattern!r}")
        else:
            out.append(re.escape(char))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise ValueError(f"bad code pattern {pattern!r}: {exc}") from exc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Concept(_Strict):
    """A code (or code pattern) in a value set."""

    code: str = Field(min_length=1)
    display: str | None = None

    @field_validator("code")
    @classmethod
    def _valid_pattern(cls, code: str) -> str:
        if code != code.strip():
            raise ValueError("code has leading or trailing spaces")
        if is_pattern(code):
            compile_pattern(code)
        return code


class Include(_Strict):
    """Codes of one code system (``filter`` and ``valueSet`` are not supported)."""

    system: str = Field(min_length=1)
    concept: list[Concept] = Field(min_length=1)


class Compose(_Strict):
    """The codes a value set includes, and the exceptions it excludes."""

    include: list[Include] = Field(min_length=1)
    exclude: list[Include] = Field(default_factory=list)


class ValueSetFile(BaseModel):
    """A FHIR R4 ValueSet as stored in ``rules/valuesets/`` (other elements are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    resourceType: Literal["ValueSet"]
    id: str = Field(pattern=VALUESET_ID)
    url: str | None = None
    name: str | None = None
    title: str | None = None
    status: str | None = None
    description: str | None = None
    compose: Compose


@dataclass(frozen=True)
class _CodeMatcher:
    """Literal codes and compiled patterns of one system."""

    exact: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]

    def matches(self, code: str) -> bool:
        return code in self.exact or any(p.fullmatch(code) for p in self.patterns)


def _matchers(includes: list[Include]) -> dict[str, _CodeMatcher]:
    """Group the concepts of includes (or excludes) by system."""
    by_system: dict[str, list[str]] = {}
    for inc in includes:
        by_system.setdefault(inc.system, []).extend(c.code for c in inc.concept)
    return {
        system: _CodeMatcher(
            exact=frozenset(c for c in codes if not is_pattern(c)),
            patterns=tuple(compile_pattern(c) for c in codes if is_pattern(c)),
        )
        for system, codes in by_system.items()
    }


@dataclass(frozen=True)
class ValueSet:
    """A compiled value set: answers whether a (system, code) belongs to it."""

    id: str
    title: str | None
    includes: dict[str, _CodeMatcher]
    excludes: dict[str, _CodeMatcher]

    @classmethod
    def compile(cls, source: ValueSetFile) -> ValueSet:
        """Compile a validated ValueSet file."""
        return cls(
            id=source.id,
            title=source.title or source.name,
            includes=_matchers(source.compose.include),
            excludes=_matchers(source.compose.exclude),
        )

    @property
    def systems(self) -> frozenset[str]:
        """Code systems this value set draws codes from."""
        return frozenset(self.includes)

    _memo: dict[tuple[str, str], bool] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def contains(self, system: str, code: str) -> bool:
        """Whether the coding (system, code) is a member (memoised: patterns are costly)."""
        try:
            return self._memo[system, code]
        except KeyError:
            pass
        inc = self.includes.get(system)
        if inc is None or not inc.matches(code):
            found = False
        else:
            exc = self.excludes.get(system)
            found = exc is None or not exc.matches(code)
        if len(self._memo) < 100_000:
            self._memo[system, code] = found
        return found
