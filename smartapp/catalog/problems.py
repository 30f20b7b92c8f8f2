"""What is wrong with a catalog: each Problem names its file and field path, and CatalogError
carries every one of them, so whoever edits the data fixes everything in one pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the catalog: the file (relative to the catalog folder), the field path
    inside the resource (``telecom[0].value``; empty for the whole file) and what is wrong."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}: {where}{self.message}"


class CatalogError(Exception):
    """The catalog cannot be used; ``problems`` lists every problem found, not just the first."""

    def __init__(self, folder: Path | str, problems: Sequence[Problem]) -> None:
        self.folder = Path(folder)
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(
            f"catalog {self.folder}: {count} problem{'s' if count != 1 else ''}\n{lines}"
        )


def join_path(path: str, key: str | int) -> str:
    """A field path one step down: ``telecom`` + 0 -> ``telecom[0]``, + ``value`` -> ``.value``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def within(path: str, parent: str) -> bool:
    """True when ``path`` is ``parent`` or inside it (so one mistake is reported once)."""
    return path == parent or path.startswith((parent + ".", parent + "["))
