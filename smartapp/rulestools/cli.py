"""``handoff rules``: check, test and run rule packs from the command line.

Output is a contract other tools read (see ``rules/README.md``):

* ``rules check [PACK]`` prints ``OK id=... version=... hash=sha256:...`` and exits 0, or
  prints every problem as ``file:line: field: message`` and exits 2.
* ``rules eval CHART --now T [--encounter ID] [--unread TYPES] [--pack P] --json`` prints
  ``{"pack": {"id", "version"}, "suggestions": [...], "withheld": [...], "notices": [...]}``;
  a bad chart or pack exits 2 with the reason on stderr and nothing on stdout.
* ``rules explain CHART --now T [...]`` prints, for each kind, why it was suggested,
  withheld or not triggered (the same engine call as ``eval``).
* ``rules test [CASES...]`` runs YAML cases (suggestions, withheld reasons, notices),
  prints a diff per failure, exits 1 on any.
* ``rules backtest PATH [--pack P] [--compare P2] [--workers N | --engine spark [--master URL]]
  [--progress] [--json]`` replays every past ED visit of a folder of bundles or NDJSON files
  (``.ndjson``, ``.ndjson.gz``) at each moment the chart changed during it, on this machine's
  processes or on Apache Spark (the same report); unreadable input exits 2.

Without ``--pack`` every command uses the pack the app runs: ``packs/default.yaml`` of the
rules directory the settings name (``RULES_DIR``, ``HANDOFF_RULES_DIR``; see
``smartapp.rulestools.setting``), else of the rules Handoff ships.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from smartapp.engine import (
    Chart,
    ChartError,
    Evaluation,
    Pack,
    PackError,
    evaluate,
    load_pack,
)
from smartapp.engine.cases import RuleCase, compare_case
from smartapp.engine.location import RULES_DIR_ENV, RulesDirError, default_pack, is_packaged
from smartapp.engine.pack import pack_json_schema
from smartapp.engine.source import SourceDoc, SourceError, read_source
from smartapp.rulestools.setting import configured_rules_dir, settings

PATH = click.Path(path_type=Path)


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print to stderr and exit."""
    click.echo(message, err=True)
    sys.exit(code)


def configured_rules() -> Path:
    """The rules directory the app would use: the settings of the instance folder the
    ``handoff`` group was given (else HANDOFF_INSTANCE_PATH...), HANDOFF_RULES_DIR first.
    A setting that names no rules directory exits 2 saying so."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx else None
    instance = root.get("instance_path") if isinstance(root, dict) else None
    try:
        return configured_rules_dir(settings(instance))
    except RulesDirError as exc:
        _fail(f"error: {exc}")


def _load_pack_or_exit(pack: Path | None, valuesets: Path | None, *, to_stderr: bool) -> Pack:
    """Load a pack (default: the app's); on errors list them all and exit 2."""
    try:
        return load_pack(pack or default_pack(configured_rules()), valuesets)
    except PackError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=to_stderr)
        _fail(f"{len(exc.issues)} error(s) in the rule pack")


def read_chart(path: Path) -> Chart:
    """A chart from a JSON file holding a Bundle or a list of resources."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise ChartError(f"{path}: cannot read: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ChartError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return Chart.from_resources(data) if isinstance(data, list) else Chart.from_bundle(data)
    except ChartError as exc:
        raise ChartError(f"{path}: {exc}") from exc


def parse_now(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@click.group(name="rules")
def rules() -> None:
    """Check, test and run the clinical rule packs."""


@rules.command("check")
@click.argument("pack", required=False, type=PATH)
@click.option("--valuesets", type=PATH, help="Value set directory (default: beside packs/).")
def check(pack: Path | None, valuesets: Path | None) -> None:
    """Validate a pack (default: the default pack) and its value sets."""
    loaded = _load_pack_or_exit(pack, valuesets, to_stderr=False)
    click.echo(f"OK id={loaded.id} version={loaded.version} hash=sha256:{loaded.content_hash}")


def chart_arguments(command: Callable) -> Callable:
    """The chart and how to evaluate it, shared by ``rules eval`` and ``rules explain``."""
    options = [
        click.argument("chart", type=PATH),
        click.option("--now", "now_text", required=True, help="Evaluation time, ISO 8601."),
        click.option("--encounter", help="Current encounter id (default: latest open ED visit)."),
        click.option(
            "--unread",
            "unread_text",
            multiple=True,
            help="Resource types that could not be read completely: TYPE[,TYPE...] (repeatable).",
        ),
        click.option("--pack", type=PATH, help="Rule pack (default: the default pack)."),
        click.option(
            "--valuesets", type=PATH, help="Value set directory (default: beside packs/)."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def decide_or_exit(
    decide: Callable,
    chart: Path,
    now_text: str,
    encounter: str | None,
    unread_text: tuple[str, ...],
    pack: Path | None,
    valuesets: Path | None,
) -> Any:
    """Run one engine call (``evaluate`` or ``explain``) on a chart file; a bad chart, time
    or pack exits 2 with the reason on stderr."""
    now = parse_now(now_text)
    unread = parse_types(unread_text)
    loaded = _load_pack_or_exit(pack, valuesets, to_stderr=True)
    try:
        return decide(read_chart(chart), now, loaded, encounter, unread=unread)
    except ChartError as exc:
        _fail(f"error: {exc}")


@rules.command("eval")
@chart_arguments
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def eval_command(
    chart: Path,
    now_text: str,
    encounter: str | None,
    unread_text: tuple[str, ...],
    pack: Path | None,
    valuesets: Path | None,
    as_json: bool,
) -> None:
    """Evaluate a chart (FHIR Bundle or JSON list of resources) and print suggestions,
    withheld suggestions and notices."""
    result = decide_or_exit(evaluate, chart, now_text, encounter, unread_text, pack, valuesets)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(render_text(result, chart))


def parse_types(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--unread`` values (comma-separated, repeatable) as FHIR resource type names."""
    types = [t.strip() for value in values for t in value.split(",") if t.strip()]
    for name in types:
        if not name[:1].isupper() or not name.isalpha():
            raise click.BadParameter(f"not a FHIR resource type: {name!r}", param_hint="--unread")
    return tuple(dict.fromkeys(types))


def render_text(result: Evaluation, chart: Path) -> str:
    """A readable rendering of an evaluation for informatics staff."""
    enc = result.encounter
    lines = [
        f"pack {result.pack_id} {result.pack_version} (sha256:{result.content_hash[:12]})",
        f"chart {chart}  now {result.now.isoformat() if result.now else '?'}",
        f"patient {(result.patient or {}).get('id', '(none)')}  encounter "
        f"{enc.get('id') if enc else '(none: nothing counts as this visit)'}",
    ]
    for notice in result.notices:
        unread = f": {', '.join(notice.unread)}" if notice.unread else ""
        lines.append(f"NOTICE {notice.code}{unread}")
    lines.append(f"{len(result.suggestions)} suggestion(s)")
    for n, s in enumerate(result.suggestions, 1):
        variant = f" [{s.variant}]" if s.variant else ""
        lines.append(f"{n}. {s.kind}{variant}: {s.title}")
        lines.append(f"   why:      {s.reason}")
        lines.append(f"   evidence: {', '.join(s.evidence) or '(none)'}")
        if s.cautions:
            lines.append(f"   cautions: {', '.join(s.cautions)}")
        for caution in s.cautions:
            refs = ", ".join(s.caution_evidence.get(caution, ())) or "(no chart evidence)"
            lines.append(f"     {caution}: {refs}")
        lines.append(f"   decline:  {', '.join(d.label for d in s.decline_reasons)}")
        lines.append(f"   rule:     {s.rule}")
    if result.withheld:
        lines.append(f"{len(result.withheld)} withheld")
    for w in result.withheld:
        lines.append(f"-  {w.kind}: not suggested because {w.reason}")
        for blocked in w.reasons:
            lines.append(f"   {blocked.reason}: {', '.join(blocked.evidence) or '(no evidence)'}")
    return "\n".join(lines)


@rules.command("explain")
@chart_arguments
@click.option("--verbose", is_flag=True, help="Also the branches that did not decide.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def explain_command(
    chart: Path,
    now_text: str,
    encounter: str | None,
    unread_text: tuple[str, ...],
    pack: Path | None,
    valuesets: Path | None,
    verbose: bool,
    as_json: bool,
) -> None:
    """For each kind: why it was suggested, withheld or not triggered, naming the facts,
    values and resources that decided."""
    from smartapp.engine.explain import explain, render

    result = decide_or_exit(explain, chart, now_text, encounter, unread_text, pack, valuesets)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(render(result, verbose=verbose))


@rules.command("test")
@click.argument("cases", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--pack", type=PATH, help="Pack for cases that name none (default pack).")
@click.option("--valuesets", type=PATH, help="Value set directory (default: beside packs/).")
def test_command(cases: tuple[Path, ...], pack: Path | None, valuesets: Path | None) -> None:
    """Run rule test cases (YAML files; default: every case in rules/tests/)."""
    if not cases:
        folder = configured_rules() / "tests"
        if not folder.is_dir():
            _fail(
                f"no test cases: {folder} does not exist (the rules inside an installed "
                f"package carry none); name case files, or set {RULES_DIR_ENV} to a rules "
                "directory with tests/",
                code=1,
            )
        cases = (folder,)
    pack = pack or default_pack(configured_rules())
    files = _case_files(cases)
    if not files:
        _fail("no test cases found", code=1)
    packs: dict[Path, Pack] = {}
    failed = 0
    for path in files:
        name, problems = run_case(path, pack, valuesets, packs)
        if problems:
            failed += 1
            click.echo(f"FAIL {name} ({path})")
            for line in problems:
                click.echo(f"    {line}")
        else:
            click.echo(f"PASS {name}")
    click.echo(f"{len(files) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def _case_files(paths: tuple[Path, ...]) -> list[Path]:
    """Case files named, or found (``*.yaml``, ``*.yml``) under named directories."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")))
        else:
            found.append(path)
    return found


def run_case(
    path: Path, pack: Path | None, valuesets: Path | None, packs: dict[Path, Pack]
) -> tuple[str, list[str]]:
    """Run one case file (with its own pack, else ``pack``, else the app's): its name and
    the list of problems (empty when it passes)."""
    try:
        doc, _raw = read_source(path)
        case = RuleCase.model_validate(doc.data)
    except SourceError as exc:
        return path.stem, [str(exc.issue)]
    except ValidationError as exc:
        return path.stem, _case_issues(doc, exc)
    name = case.name or path.stem
    pack_path = (
        (path.parent / case.pack) if case.pack else (pack or default_pack(configured_rules()))
    )
    try:
        if pack_path.resolve() not in packs:
            packs[pack_path.resolve()] = load_pack(pack_path, valuesets)
        loaded = packs[pack_path.resolve()]
        chart = read_chart(path.parent / case.chart)
        result = evaluate(chart, case.now, loaded, case.encounter, unread=case.unread)
    except PackError as exc:
        return name, [str(i) for i in exc.issues]
    except ChartError as exc:
        return name, [f"chart error: {exc}"]
    return name, compare_case(case, result)


def _case_issues(doc: SourceDoc, exc: ValidationError) -> list[str]:
    """Validation errors of a case file as ``file:line: field: message``."""
    issues = []
    for err in exc.errors(include_url=False):
        loc = doc.locate(tuple(err["loc"]), missing=err["type"] == "missing")
        issues.append(str(doc.issue(loc, err["msg"])))
    return issues


@rules.command("backtest")
@click.argument("path", type=PATH)
@click.option("--pack", type=PATH, help="Rule pack (default: the default pack).")
@click.option(
    "--compare",
    "compare",
    type=PATH,
    help="A second pack: list the visits whose suggestions differ.",
)
@click.option("--valuesets", type=PATH, help="Value set directory (default: beside packs/).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes (default: every core; 1 runs in this process).",
)
@click.option(
    "--engine",
    type=click.Choice(["single", "spark"]),
    default="single",
    show_default=True,
    help="single: this machine's processes; spark: Apache Spark (pip install 'handoff[spark]').",
)
@click.option(
    "--master",
    default=None,
    help="Spark master URL (--engine spark; default local[*]: every core of this machine).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress on stderr (default: when stderr is a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def backtest_command(
    path: Path,
    pack: Path | None,
    compare: Path | None,
    valuesets: Path | None,
    workers: int | None,
    engine: str,
    master: str | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Replay every past ED visit under PATH (bundles, NDJSON) at its own time."""
    from smartapp.rulestools.backtest import (
        BacktestError,
        no_gc,
        render_text,
        report,
        report_parts,
        run_backtest,
    )
    from smartapp.rulestools.backtest_progress import Progress

    if engine == "single" and master is not None:
        _fail("error: --master is for --engine spark")
    if engine == "spark" and workers is not None:
        _fail("error: --workers is for --engine single (Spark's master sets the cores)")
    packs = [_load_pack_or_exit(pack, valuesets, to_stderr=True)]
    if compare is not None:
        packs.append(_load_pack_or_exit(compare, valuesets, to_stderr=True))
    started = time.perf_counter()
    shown = sys.stderr.isatty() if progress is None else progress
    bar = Progress(sys.stderr, redraw=sys.stderr.isatty()) if shown else None
    hooks: dict[str, Any] = {"progress": bar.advance, "on_tasks": bar.start} if bar else {}
    try:
        if engine == "spark":
            from smartapp.rulestools.spark_backtest import DEFAULT_MASTER, run_spark_backtest

            result = run_spark_backtest(
                path, packs, master or DEFAULT_MASTER, keep_visits=False, **hooks
            )
        else:
            # the report is all this command shows: each visit summed up where it is replayed
            result = run_backtest(path, packs, workers, keep_visits=False, **hooks)
    except BacktestError as exc:
        if bar:
            bar.finish()
        _fail(f"error: {exc}")
    if bar:
        bar.finish()
    with no_gc():  # the report is acyclic: the collector would only rescan it
        if as_json:  # in parts: click.echo would copy the whole text to add its newline
            for part in report_parts(result):
                sys.stdout.write(part)
            sys.stdout.write("\n")
            sys.stdout.flush()
            return
        text = render_text(report(result), time.perf_counter() - started)
    click.echo(text)


@rules.command("schema")
@click.option("--write", is_flag=True, help="Write rules/schema/pack.schema.json.")
def schema_command(write: bool) -> None:
    """Print (or write) the JSON Schema of the pack format."""
    text = schema_text()
    if write:
        rules = configured_rules()
        if is_packaged(rules):
            _fail(
                f"error: {rules} is the copy of the rules inside the installed package; set "
                f"{RULES_DIR_ENV} to the rules directory to write its schema/pack.schema.json"
            )
        target = rules / "schema" / "pack.schema.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        click.echo(f"wrote {target}")
    else:
        click.echo(text, nl=False)


def schema_text(schema: dict[str, Any] | None = None) -> str:
    """The pack schema as committed: indented JSON with a final newline."""
    return json.dumps(schema or pack_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    rules()
