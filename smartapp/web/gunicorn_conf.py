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

import gc
import os
import tempfile
from pathlib import Path

from gunicorn.glogging import Logger, SafeAtoms

from smartapp.web.logs import JsonFormatter, redact_query

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Access log to stdout (a container's log collector), error log to stderr.
accesslog = "-"
errorlog = "-"
# Each worker's heartbeat is a file whose time it sets on every pass of its loop (several
# times a request): in memory where the machine has it, as gunicorn's documentation advises
# for containers, not on a disk's journal.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    worker_tmp_dir = "/dev/shm"
# Gunicorn's combined format, plus the request time; the query is cut from `%(r)s` below.
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)ss rid=%({x-request-id}o)s'
)
# The query string atoms are dropped outright; every other text atom has its query cut.
QUERY_ATOMS = frozenset({"q", "{query_string}e"})


class RedactedAtoms(SafeAtoms):
    """The atoms of one access line, each made safe when the format names it: a query cut
    (the query atoms: `…` outright), quotes escaped as gunicorn's SafeAtoms escapes them.
    A request has some sixty atoms (every header and environ value) and a format names about
    a dozen: cutting and escaping them all, then again in the access logger's filter
    (smartapp.web.logs, which leaves a mapping that `redacts_on_read` alone), was a visible
    part of serving a request."""

    redacts_on_read = True

    def __init__(self, atoms: dict) -> None:
        dict.__init__(self, atoms)  # as they are: each is made safe when it is read

    def __getitem__(self, key: str):
        value = SafeAtoms.__getitem__(self, key)  # headers in any case; '-' when absent
        if (key.lower() if key.startswith("{") else key) in QUERY_ATOMS:
            return "…" if value else value
        if isinstance(value, str):
            return redact_query(value).replace('"', '\\"')
        return value

    # Whatever else reads the mapping (another filter or handler, logging's report of a line
    # it could not format) sees the values as the format does.
    def get(self, key: str, default=None):
        return self[key] if key in self else default  # noqa: SIM401 (self.get is this)

    def items(self):
        return [(key, self[key]) for key in self]

    def values(self):
        return [self[key] for key in self]

    def __repr__(self) -> str:
        return repr(dict(self.items()))

    __str__ = __repr__


class QueryRedactingLogger(Logger):
    """Gunicorn's logger whose access-log atoms carry no query string."""

    atoms_wrapper_class = RedactedAtoms

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


def post_worker_init(worker) -> None:
    """The app is loaded: what it holds for the worker's life (modules, mappers, compiled
    templates and statements, some 150k objects) leaves the garbage collector's view. Each
    full collection walked them all, about 0.12 s of a worker's CPU (the collector's CPU
    measured over 192 flows: 2.0 ms a flow, 0.57 ms frozen); it now walks what requests
    make (`gc.freeze`, as the gc module's documentation advises for forking servers)."""
    gc.freeze()


def child_exit(server, worker) -> None:
    """A worker exited: its live gauges leave the sum (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
