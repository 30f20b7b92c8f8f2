"""The README's map ("Where things live") names files that exist, and each of five behaviours
is found in two hops: README -> the file that holds it."""

from __future__ import annotations

import re

import pytest

from smartapp.config import REPO_ROOT

pytestmark = pytest.mark.unit

README = REPO_ROOT / "README.md"
# behaviour: (words the README row uses, the file it names, what that file holds)
BEHAVIOURS = {
    "PKCE": ("PKCE", "smartapp/launch/client.py", "S256"),
    "retry backoff": ("retry backoff", "smartapp/writeback/outbox.py", "def backoff_seconds"),
    "Part 2 labels": ("Part 2 labels", "smartapp/writeback/shapes.py", "42CFRPart2"),
    "COWS threshold": ("COWS threshold", "rules/packs/default.yaml", "cows_threshold:"),
    "small-cell suppression": (
        "small-cell suppression",
        "smartapp/staff/dashboard/suppression.py",
        "min_cell",
    ),
}


def map_rows() -> list[tuple[str, str]]:
    """(package, entry points) of each row of the map's table."""
    section = README.read_text().split("## Where things live", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`smartapp/"):
            rows.append((cells[1].strip("`"), cells[2]))
    return rows


def named_paths(package: str, entry_points: str) -> list[str]:
    """The files and folders a row names: `x.py` and `x/` inside its package, and paths
    from the repository root (`rules/...`)."""
    paths = []
    for token in re.findall(r"`([^`\s]+)`", entry_points):
        if token.startswith("/") or "*" in token:
            continue  # a URL, or a kind of file
        if token.startswith(("rules/", "launch/", "catalog/", "smartapp/")):
            paths.append(token)
        elif token.endswith((".py", "/")):
            paths.append(package + token)
    return paths


def test_the_map_has_a_row_per_package():
    packages = {package for package, _ in map_rows()}
    on_disk = {
        f"smartapp/{p.name}/"
        for p in (REPO_ROOT / "smartapp").iterdir()
        if (p / "__init__.py").is_file()
    }
    assert on_disk <= packages, f"not in the README's map: {sorted(on_disk - packages)}"


def test_every_file_the_map_names_exists():
    missing = [
        path
        for package, entry_points in map_rows()
        for path in named_paths(package, entry_points)
        if not (REPO_ROOT / path).exists()
    ]
    assert not missing, f"the README's map names files that are not there: {missing}"


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_a_behaviour_is_two_hops_from_the_readme(behaviour: str):
    words, path, holds = BEHAVIOURS[behaviour]
    rows = [(package, entry) for package, entry in map_rows() if words in entry]
    assert rows, f"the README's map does not mention the {words}"
    named = {p for package, entry in rows for p in named_paths(package, entry)}
    assert path in named, f"the row with the {words} does not name {path}"
    assert holds in (REPO_ROOT / path).read_text(), f"{path} no longer holds {holds!r}"
