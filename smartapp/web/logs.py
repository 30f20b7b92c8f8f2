"""Access-log redaction: query strings may hold an authorization code, `state`, a launch value
or an auditor's patient search, so they are cut before any log handler sees them (werkzeug's
and gunicorn's access loggers; gunicorn_conf.py uses `redact_query` for its atoms).

Structured logs (issue 15): `JsonFormatter` writes one JSON object per line with the request
id of the request being served (`current_request_id`, set by smartapp.ops.requestid), and
scrubs tokens, JWTs and codes from every message whatever logged it."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import MutableMapping
from contextvars import ContextVar

# A query string runs to the next whitespace: a request line cannot hold a space, while a `"`
# (sent raw by a client that does not encode it) is part of the query, not its end.
QUERY = re.compile(r"\?\S*")

ACCESS_LOGGERS = ("werkzeug", "gunicorn.access")


def redact_query(text: str) -> str:
    """`text` with every query string cut to `?…` (codes, state, launch values, searches)."""
    return QUERY.sub("?…", text)


class RedactQueryStrings(logging.Filter):
    """Access logs print request lines; query strings may hold a code, state, launch value or
    an auditor's patient search, so they are cut before any handler sees them (positional
    arguments as werkzeug logs them, a mapping as gunicorn's access logger passes its atoms)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        elif getattr(record.args, "redacts_on_read", False):
            pass  # Handoff's gunicorn atoms (gunicorn_conf.RedactedAtoms) cut as they are read
        elif isinstance(record.args, MutableMapping) and record.args:
            # In place: gunicorn's mapping answers '-' for atoms a format names but lacks.
            for key, value in list(record.args.items()):
                if isinstance(value, str):
                    record.args[key] = redact_query(value)
        elif isinstance(record.msg, str):  # a message without arguments is its own text
            record.msg = redact_query(record.msg)
        return True


def redact_access_logs() -> None:
    """Add the filter to the access loggers, once each."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryStrings) for f in logger.filters):
            logger.addFilter(RedactQueryStrings())


# -- structured logs (smartapp.ops) -------------------------------------------------------

#: The request id of the request this thread serves (smartapp.ops.requestid sets it).
current_request_id: ContextVar[str | None] = ContextVar("handoff_request_id", default=None)

#: Secrets a log line must never carry, whatever logged it: bearer tokens and JWTs (access,
#: id and client-assertion tokens), authorization codes and `state` in a query or a form.
SECRETS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 …"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "…jwt…"),
    (
        re.compile(r"(?i)\b(code|state|launch|access_token|refresh_token|id_token)=[^&\s\"']+"),
        r"\1=…",
    ),
)


def scrub(text: str) -> str:
    """`text` with query strings, bearer tokens, JWTs and code/state values cut."""
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return redact_query(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (scrubbed), the request id
    of the request being served, and the exception's type and traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        rid = getattr(record, "request_id", None) or current_request_id.get()
        if rid:
            line["request_id"] = rid
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["traceback"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


JsonFormatter.converter = time.gmtime  # UTC times, as the "Z" says


def use_json_logs(logger: logging.Logger | None = None) -> None:
    """Every handler of `logger` (default: the root logger, where basicConfig put Handoff's
    stream handler) formats JSON lines."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(JsonFormatter())
