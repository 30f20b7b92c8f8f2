"""Access-log redaction: query strings may hold an authorization code, `state`, a launch value
or an auditor's patient search, so they are cut before any log handler sees them (werkzeug's
and gunicorn's access loggers; gunicorn_conf.py uses `redact_query` for its atoms)."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping

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
