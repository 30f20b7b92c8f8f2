"""WSGI entry for production servers: `gunicorn -c python:smartapp.web.gunicorn_conf
'smartapp.wsgi:app'` (its access log keeps no query string; run the outbox worker beside it
with `handoff outbox worker`). Every worker may start at once: schema migrations run
once, under a lock, and the others find them done. A setting that stops the start is printed as
one line (no traceback) and the worker exits with gunicorn's boot-error code, so gunicorn stops."""

import sys

from smartapp import create_app
from smartapp.startup import StartupError

WORKER_BOOT_ERROR = 3  # gunicorn halts instead of restarting a worker that exits with it


def production_app():
    """The app for a production server: never the demo (whose folder registers the sandbox)."""
    app = create_app()
    if app.config["DEMO"]:
        raise StartupError(
            f"DEMO is set (in {app.instance_path}/config.py, written by `handoff demo`, or "
            "HANDOFF_DEMO): a production server needs its own instance folder "
            "(HANDOFF_INSTANCE_PATH) with its own settings."
        )
    return app


try:
    app = production_app()
except StartupError as exc:
    print(f"handoff: cannot start: {exc.message}", file=sys.stderr, flush=True)
    raise SystemExit(WORKER_BOOT_ERROR) from exc
