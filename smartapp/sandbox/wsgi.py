"""The sandbox EHR for a WSGI server with several worker processes (load tests, a shared demo):

    HANDOFF_SANDBOX_ARGS="--port 8800 --app-url http://127.0.0.1:8700" \\
        gunicorn --workers 2 --threads 8 --bind 127.0.0.1:8800 'smartapp.sandbox.wsgi:app'

The arguments are `python -m smartapp.sandbox`'s (its --host/--port make the base URL; the
server's --bind decides where it listens). Seed the database before starting the workers (run
`python -m smartapp.sandbox` once with the same --database-url and --seed, or build the app once
in the starting process): each worker then only finds it seeded, instead of several seeding at
once."""

from __future__ import annotations

import os
import shlex

from smartapp.sandbox.__main__ import ARGS_ENV, build_app, parse_args

app = build_app(parse_args(shlex.split(os.environ.get(ARGS_ENV, ""))))
