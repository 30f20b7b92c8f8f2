"""Gunicorn settings for Handoff in production:

    gunicorn -c python:smartapp.web.gunicorn_conf 'smartapp.wsgi:app'

The access log must keep no query string: Handoff's URLs carry authorization codes, `state`,
launch values and an auditor's `patient=` search, and the redirect after /launch carries them
too. The logger below cuts the query from every value a log format can name (the request line,
`%(q)s`, the Referer, response headers such as Location, environ values such as RAW_URI), so an
operator's own `--access-logformat` cannot bring them back. Any other setting may be given on
the command line or in the environment (GUNICORN_CMD_ARGS) as usual.
"""

from __future__ import annotations

from gunicorn.glogging import Logger

from smartapp.web.logs import redact_query

# Access log to stdout (a container's log collector), error log to stderr.
accesslog = "-"
errorlog = "-"
# Gunicorn's combined format, plus the request time; the query is cut from `%(r)s` below.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)ss'
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


logger_class = QueryRedactingLogger
