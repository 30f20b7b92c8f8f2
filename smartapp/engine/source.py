"""Reading rule files (YAML, and JSON through the same parser) with line numbers.

``yaml.SafeLoader`` composes the node tree; we build plain Python data from it and
remember the line of every mapping key and sequence item, so a validation error at
``('suggestions', 2, 'when')`` can be reported as ``default.yaml:57``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DataPath = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Issue:
    """One problem in a rule file: where it is and what is wrong."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        """``file:line: field: message``, the format editors and CI understand."""
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


@dataclass
class SourceDoc:
    """Parsed data of one file and the line of each data path in it."""

    path: Path
    data: Any
    lines: dict[DataPath, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file name as shown in messages."""
        return str(self.path)

    def line_of(self, path: DataPath) -> int:
        """Line of a data path, or of its nearest ancestor present in the file."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1

    def issue(self, path: DataPath, message: str) -> Issue:
        """An issue at a data path of this file."""
        return Issue(self.name, self.line_of(path), format_path(path), message)

    def locate(self, loc: tuple[Any, ...], missing: bool = False) -> DataPath:
        """Map a pydantic error location onto a path in the data.

        Parts that are not in the data (union tags, validator names) are skipped; for a
        missing field the last part is kept, since it names the field that is absent.
        """
        node: Any = self.data
        path: DataPath = ()
        for i, part in enumerate(loc):
            if _has(node, part):
                node, path = node[part], (*path, part)
            elif missing and i == len(loc) - 1:
                path = (*path, part)
        return path


def _has(node: Any, part: Any) -> bool:
    """Whether a mapping has this key, or a list this index."""
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


class SourceError(Exception):
    """A file could not be read or parsed at all."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(str(issue))
        self.issue = issue


def format_path(path: DataPath) -> str:
    """``('suggestions', 2, 'when')`` -> ``suggestions[2].when``; empty path -> ``(root)``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def read_source(path: Path) -> tuple[SourceDoc, bytes]:
    """Read and parse a YAML or JSON file, recording lines; also return its raw bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceError(Issue(str(path), 1, "(file)", f"cannot read: {exc.strerror}")) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(Issue(str(path), 1, "(file)", "not UTF-8 text")) from exc
    if path.suffix == ".json":
        return _parse_json(text, path), raw
    return parse_source(text, path), raw


def _parse_json(text: str, path: Path) -> SourceDoc:
    """JSON is the truth; the YAML parser (a JSON superset) only supplies line numbers."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(Issue(str(path), exc.lineno, "(syntax)", exc.msg)) from exc
    try:
        doc = parse_source(text, path)
    except SourceError:
        return SourceDoc(path, data)
    return doc if doc.data == data else SourceDoc(path, data)


def parse_source(text: str, path: Path) -> SourceDoc:
    """Parse YAML (or JSON) text with ``yaml.SafeLoader``, keeping line numbers."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        doc = SourceDoc(path, None)
        if node is not None:
            doc.data = _build(loader, node, (), doc)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SourceError(Issue(str(path), line, "(syntax)", message or "invalid YAML")) from exc
    except yaml.YAMLError as exc:
        raise SourceError(Issue(str(path), 1, "(syntax)", str(exc))) from exc
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: DataPath, doc: SourceDoc) -> Any:
    """Construct data from a node, recording the line of every key and item."""
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int):
                raise _marked(key_node, f"mapping key must be a string, got {key!r}")
            if key in out:
                raise _marked(
                    key_node, f"duplicate key {key!r} (first at line {doc.lines[(*path, key)]})"
                )
            doc.lines[(*path, key)] = line
            out[key] = _build(loader, value_node, (*path, key), doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), doc) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _marked(node: yaml.Node, message: str) -> yaml.MarkedYAMLError:
    """A YAML error pointing at a node."""
    return yaml.MarkedYAMLError(problem=message, problem_mark=node.start_mark)
