"""Run the sandbox EHR by hand.

    python -m smartapp.sandbox --port 8800 --app-url http://127.0.0.1:8700

registers the client `handoff-demo` (redirect {app}/callback, launch {app}/launch).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from smartapp.sandbox import SandboxClient, create_sandbox_app
from smartapp.sandbox.fhir.write_rules import BEHAVIOURS, FHIR_REST
from smartapp.sandbox.seed import KNOWN_SETS
from smartapp.serving import serve_in_thread

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, build the app and serve it until interrupted."""
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    base_url = (args.base_url or f"http://{args.host}:{args.port}").rstrip("/")
    if urlsplit(base_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        # authlib refuses plain http except on loopback; a sandbox on a LAN name is still a demo.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
    app_url = args.app_url.rstrip("/")
    client = SandboxClient(
        client_id=args.client_id,
        redirect_uris=[f"{app_url}/callback"],
        launch_url=f"{app_url}/launch",
    )
    app = create_sandbox_app(
        base_url=base_url,
        database_url=args.database_url,
        clients=[client],
        shared_dir=args.shared_dir,
        seed=tuple(s for s in args.seed.split(",") if s),
        write_behaviour=args.write_behaviour,
    )
    handle = serve_in_thread(app, host=args.host, port=args.port)
    print(f"Sandbox EHR on {base_url}/  (FHIR base {base_url}/fhir)  Ctrl-C to stop", flush=True)
    try:
        handle.thread.join()
    except KeyboardInterrupt:
        handle.stop()


if __name__ == "__main__":
    main()
