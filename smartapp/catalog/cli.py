"""``python -m smartapp.catalog check|list FOLDER``: validate a catalog folder, or list its
programs as the physician's screen would."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from smartapp.catalog.codes import SERVICE_TYPES
from smartapp.catalog.load import load_catalog
from smartapp.catalog.problems import CatalogError
from smartapp.catalog.programs import Catalog, Program


def _parser() -> argparse.ArgumentParser:
    """The command line; its help text is the catalog package's description."""
    from smartapp import catalog  # the package imports this module: read its docstring late

    parser = argparse.ArgumentParser(
        prog="python -m smartapp.catalog",
        description=catalog.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a catalog folder")
    check.add_argument("folder", type=Path)
    listing = commands.add_parser("list", help="list the programs of a catalog folder")
    listing.add_argument("folder", type=Path)
    listing.add_argument("--service", choices=sorted(SERVICE_TYPES))
    listing.add_argument("--open-now", action="store_true", help="only programs open now")
    return parser


def _counts_line(folder: Path, catalog: Catalog) -> str:
    """``OK folder: N programs (HealthcareService), ...; time zone ...``."""
    counts = catalog.counts()
    return (
        f"OK {folder}: {counts['HealthcareService']} programs (HealthcareService), "
        f"{counts['Organization']} Organization, {counts['Location']} Location; "
        f"time zone {catalog.timezone}"
    )


def _program_text(program: Program) -> str:
    """A program in four lines: name, services, phone/address/hours, and its flags."""
    flags = [
        label
        for flag, label in (
            (program.accepting_new, "accepting new patients"),
            (program.walk_in, "walk-in"),
            (program.telehealth, "telehealth"),
            (program.same_day_bup, "same-day bup"),
        )
        if flag
    ]
    return (
        f"{program.id}: {program.name} ({program.organization})\n"
        f"    {', '.join(program.service_labels)}\n"
        f"    {program.phone} | {program.address or 'no street address'} | "
        f"{program.hours}\n    {', '.join(flags) or '-'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``check FOLDER``: validate and print counts (exit 0) or every problem (exit 2).
    ``list FOLDER``: print the programs as the physician's screen would list them."""
    args = _parser().parse_args(argv)
    try:
        catalog = load_catalog(args.folder)
    except CatalogError as error:
        print(error, file=sys.stderr)
        return 2
    if args.command == "check":
        print(_counts_line(args.folder, catalog))
        return 0
    open_at = datetime.now(ZoneInfo(catalog.timezone)) if args.open_now else None
    for program in catalog.programs(service=args.service, open_at=open_at):
        print(_program_text(program))
    return 0
