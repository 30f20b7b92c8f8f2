"""`handoff partners check|list`: hospital IT checks the partner files (launch/partners/*.yaml)
before a partner goes live: each file valid (file:line: field), its programs in the catalog,
its keys usable with the algorithms it names, and (with --fetch) its JWKS URL answering."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from smartapp.partners.registry import Partner, PartnerError, load_partners


def key_problems(partner: Partner, fetch: bool = False) -> list[str]:
    """What is wrong with a partner's keys: a key that cannot be read, none fit for the
    algorithms named, a JWKS URL that does not answer (only with `fetch`)."""
    client = partner.client
    if client is None:
        return []
    documents = [client.jwks] if client.jwks else []
    problems = []
    if fetch and client.jwks_uri:
        from smartapp.partners.authserver import AuthError, fetch_jwks

        try:
            documents.append(fetch_jwks(client.jwks_uri))
        except AuthError as error:
            problems.append(f"{partner.id}: {error.description}")
    usable = set()
    for document in documents:
        for data in document.get("keys", []):
            try:
                key = KeySet.import_key_set({"keys": [data]}).keys[0]
            except (JoseError, ValueError, TypeError):
                problems.append(f"{partner.id}: key {data.get('kid')!r} cannot be read")
                continue
            if not data.get("kid"):
                problems.append(f"{partner.id}: a key has no kid (assertions name their key)")
            if isinstance(key, RSAKey):
                usable.add("RS384")
            if isinstance(key, ECKey) and data.get("crv") == "P-384":
                usable.add("ES384")
    if documents and not usable & set(client.algorithms):
        problems.append(f"{partner.id}: no key fits {client.algorithms} (ES384: EC P-384)")
    return problems


def _settings() -> tuple[Path, Path]:
    """The partners and catalog folders of the app's settings (the instance `handoff` got)."""
    from smartapp import create_app
    from smartapp.partners.runtime import partners_dir

    options = click.get_current_context().find_root().obj or {}
    app = create_app(instance_path=options.get("instance_path"), use="config")
    return partners_dir(app), Path(app.config["CATALOG_DIR"])


@click.group()
def partners() -> None:
    """Community partners (launch/partners/*.yaml): check the files, list the partners."""


@partners.command()
@click.option("--folder", type=click.Path(path_type=Path), help="default: the app's PARTNERS_DIR")
@click.option("--catalog", type=click.Path(path_type=Path), help="default: CATALOG_DIR")
@click.option("--fetch", is_flag=True, help="also fetch each client's jwks_uri")
def check(folder: Path | None, catalog: Path | None, fetch: bool) -> None:
    """Validate every partner file; exit 1 naming each problem."""
    from smartapp.catalog import CatalogError, load_catalog

    if folder is None or catalog is None:
        found_folder, found_catalog = _settings()
        folder, catalog = folder or found_folder, catalog or found_catalog
    try:
        found = load_partners(folder)
    except PartnerError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    try:
        programs = {p.id for p in load_catalog(catalog).programs()}
    except CatalogError as error:
        click.echo(f"{catalog}: the catalog cannot be read: {str(error).splitlines()[0]}", err=True)
        sys.exit(1)
    problems = []
    for partner in found:
        missing = [p for p in partner.programs if p not in programs]
        if missing:
            problems.append(f"{partner.id}: programs not in the catalog {catalog}: {missing}")
        problems += key_problems(partner, fetch)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(1)
    click.echo(f"OK {folder}: {len(list(found))} partner(s)")


@partners.command(name="list")
@click.option("--folder", type=click.Path(path_type=Path), help="default: the app's PARTNERS_DIR")
def list_partners(folder: Path | None) -> None:
    """One line per partner: id, organisation, programs, client, revoked."""
    folder = folder or _settings()[0]
    try:
        found = load_partners(folder)
    except PartnerError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    for partner in found:
        client = partner.client
        access = "web page only"
        if client is not None:
            state = "REVOKED" if client.revoked else "active"
            access = f"client {client.client_id} ({state}; revoked keys: {client.revoked_kids})"
        line = f"{partner.id}\t{partner.reference}\t{','.join(partner.programs)}\t{access}"
        click.echo(line)
