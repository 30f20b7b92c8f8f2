"""WSGI entry for production servers: `gunicorn -c python:smartapp.gunicorn_conf
'smartapp.wsgi:app'` (its access log keeps no query string; run the outbox worker beside it
with `handoff outbox worker`). Every worker may start at once: schema migrations run
once, under a lock, and the others find them done. A setting that stops the start is printed as
one line (no traceback) and the worker exits with gunicorn's boot-error code, so gunicorn stops."""

import sys

from smartapp import create_app
from smartapp.startup import StartupError

WORKER_BOOT_ERROR = 3  # gunicorn halts instead of restarting a worker that exits with it

try:
    app = create_app()
except StartupError as exc:
    print(f"handoff: cannot start: {exc.message}", file=sys.stderr, flush=True)
    raise SystemExit(WORKER_BOOT_ERROR) from exc
