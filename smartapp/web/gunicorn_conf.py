"""Gunicorn settings for Handoff in production:

    gunicorn -c python:smartapp.web.gunicorn_conf 'smartapp.wsgi:app'

The access log must keep no query string: Handoff's URLs carry authorization codes, `state`,
launch values and an auditor's `patient=` search, and the redirect after /launch carries them
too. The logger below cuts the query from every value a log format can name (the request line,
`%(q)s`, the Referer, response headers such as Location, environ values such as RAW_URI), so an
operator's own `--access-logformat` cannot bring them back. Any other setting may be given on
the command line or in the environment (GUNICORN_CMD_ARGS) as usual.

Operations (smartapp.ops): the access line ends with the request id (X-Request-Id), and
gunicorn's own lines are JSON like the app's unless HANDOFF_LOG_FORMAT=text. Prometheus metrics
run in multi-process mode: every worker writes to PROMETHEUS_MULTIPROC_DIR (a fresh temporary
folder when not set; emptied at start when set) and /metrics adds the workers up; a worker
that exits is marked dead so its gauges leave the sum.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gunicorn.glogging import Logger

from smartapp.web.logs import JsonFormatter, redact_query

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Access log to stdout (a container's log collector), error log to stderr.
accesslog = "-"
errorlog = "-"
# Gunicorn's combined format, plus the request time; the query is cut from `%(r)s` below.
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)ss rid=%({x-request-id}o)s'
)
# The query string atoms are dropped outright; every other text atom has its query cut.
QUERY_ATOMS = frozenset({"q", "{query_string}e"})


class QueryRedactingLogger(Logger):
    """Gunicorn's logger whose access-log atoms carry no query string."""

    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        return {
            name: ("…" if value else value)
            if name in QUERY_ATOMS
            else (redact_query(value) if isinstance(value, str) else value)
            for name, value in atoms.items()
        }

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if os.environ.get("HANDOFF_LOG_FORMAT", "json") == "json":
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(JsonFormatter())


logger_class = QueryRedactingLogger

# Metrics from every worker: set before any worker imports prometheus-client.
if not os.environ.get(METRICS_ENV):
    os.environ[METRICS_ENV] = tempfile.mkdtemp(prefix="handoff-metrics-")


def on_starting(server) -> None:
    """A folder kept from an earlier run holds counts of processes long gone: empty it."""
    for stale in Path(os.environ[METRICS_ENV]).glob("*.db"):
        stale.unlink()


def child_exit(server, worker) -> None:
    """A worker exited: its live gauges leave the sum (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
