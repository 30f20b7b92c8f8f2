"""Run the sandbox EHR by hand.

    python -m smartapp.sandbox --port 8800 --app-url http://127.0.0.1:8700

Under gunicorn (several worker processes; seed the database first, e.g. by running this command
once, so that the workers only find it seeded):

    HANDOFF_SANDBOX_ARGS="--port 8800 --app-url ..." gunicorn 'smartapp.sandbox.wsgi:app'

registers the client `handoff-demo` (redirect {app}/callback, launch {app}/launch) and the
staff sign-in client `handoff-staff` (redirects {app}/staff/callback and
{app}/partner/callback, client_secret_basic with --staff-client-secret, default
$HANDOFF_STAFF_CLIENT_SECRET or "handoff-staff-demo-secret";
an empty secret registers it as a public client).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask

from smartapp.sandbox import SandboxClient, create_sandbox_app
from smartapp.sandbox.config import (
    DEMO_STAFF_CLIENT_SECRET,
    STAFF_CLIENT_ID,
    STAFF_CLIENT_SECRET_ENV,
)
from smartapp.sandbox.fhir.write_rules import BEHAVIOURS, FHIR_REST
from smartapp.sandbox.seed import KNOWN_SETS
from smartapp.web.serving import serve_in_thread

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: The command line smartapp.sandbox.wsgi builds its app from (under gunicorn).
ARGS_ENV = "HANDOFF_SANDBOX_ARGS"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with defaults (the staff secret's from the environment)."""
    parser = argparse.ArgumentParser(
        prog="python -m smartapp.sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--base-url", help="public origin (default http://HOST:PORT)")
    parser.add_argument("--app-url", default="http://127.0.0.1:8700", help="Handoff's origin")
    parser.add_argument("--client-id", default="handoff-demo")
    parser.add_argument(
        "--staff-client-id", default=STAFF_CLIENT_ID, help="client of Handoff's staff sign-in"
    )
    parser.add_argument(
        "--staff-client-secret",
        default=os.environ.get(STAFF_CLIENT_SECRET_ENV, DEMO_STAFF_CLIENT_SECRET),
        help=f"its client_secret_basic secret (default ${STAFF_CLIENT_SECRET_ENV} or the demo "
        "secret; empty: a public client)",
    )
    parser.add_argument(
        "--database-url",
        default=f"sqlite:///{PROJECT_ROOT / 'instance' / 'sandbox.sqlite'}",
    )
    parser.add_argument("--shared-dir", type=Path, default=PROJECT_ROOT.parent / "shared")
    parser.add_argument(
        "--seed",
        default="scenarios,synthea",
        help=f"comma-separated data sets among {', '.join(KNOWN_SETS)}",
    )
    parser.add_argument(
        "--write-behaviour",
        default=FHIR_REST,
        choices=BEHAVIOURS,
        help="how the FHIR API takes writes: a plain FHIR server, or like Epic / Oracle Health",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        help="database connections per process (default SQLAlchemy's 5 + 10 overflow)",
    )
    return parser.parse_args(argv)


def clients_for(args: argparse.Namespace) -> list[SandboxClient]:
    """The SMART app (`--client-id`, EHR launch) and the staff sign-in client."""
    app_url = args.app_url.rstrip("/")
    launch = SandboxClient(
        client_id=args.client_id,
        redirect_uris=[f"{app_url}/callback"],
        launch_url=f"{app_url}/launch",
    )
    return [launch, staff_client(args.staff_client_id, args.staff_client_secret, app_url)]


def build_app(args: argparse.Namespace) -> Flask:
    """The sandbox app the command line describes (also smartapp.sandbox.wsgi's)."""
    base_url = (args.base_url or f"http://{args.host}:{args.port}").rstrip("/")
    if urlsplit(base_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        # authlib refuses plain http except on loopback; a sandbox on a LAN name is still a demo.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
    return create_sandbox_app(
        base_url=base_url,
        database_url=args.database_url,
        clients=clients_for(args),
        shared_dir=args.shared_dir,
        seed=tuple(s for s in args.seed.split(",") if s),
        write_behaviour=args.write_behaviour,
        pool_size=args.pool_size,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, build the app and serve it until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    base_url = (args.base_url or f"http://{args.host}:{args.port}").rstrip("/")
    app = build_app(args)
    handle = serve_in_thread(app, host=args.host, port=args.port)
    print(f"Sandbox EHR on {base_url}/  (FHIR base {base_url}/fhir)  Ctrl-C to stop", flush=True)
    try:
        handle.thread.join()
    except KeyboardInterrupt:
        handle.stop()


def staff_client(client_id: str, secret: str | None, app_url: str) -> SandboxClient:
    """Handoff's staff sign-in (plain OpenID Connect): confidential with `secret`, else public."""
    return SandboxClient(
        client_id=client_id,
        redirect_uris=[f"{app_url}/staff/callback", f"{app_url}/partner/callback"],
        launch_url=f"{app_url}/",
        name="Handoff staff sign-in",
        auth_method="client_secret_basic" if secret else "none",
        client_secret=secret or None,
    )


if __name__ == "__main__":
    main()
