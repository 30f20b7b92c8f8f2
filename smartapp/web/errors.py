"""Error pages: a short title and what to do, never a stack trace; a server error says nothing
was written to the chart."""

from __future__ import annotations

from flask import Flask, render_template

#: The HTTP errors answered with Handoff's error page.
ERROR_CODES = (400, 403, 404, 405, 413, 500, 502)

TITLES = {400: "Request not accepted", 403: "Not allowed", 404: "Not found"}

TOO_LARGE = (
    "What was sent is larger than Handoff accepts. Nothing was saved; "
    "reload the page and try again."
)

SERVER_ERROR = (
    "Handoff hit an unexpected error. Nothing was written to the chart. "
    "Try again; if it persists, contact your informatics team."
)


def error_page(exc: Exception) -> tuple[str, int]:
    """The error page for an HTTP error (its description shown below 500) or any exception."""
    code = getattr(exc, "code", 500) or 500
    title = TITLES.get(code, "Something went wrong")
    if code == 413:  # MAX_CONTENT_LENGTH (issue 9 item 28)
        title = "Too much data"
        exc.description = TOO_LARGE  # type: ignore[attr-defined]  # a werkzeug HTTPException
    message = getattr(exc, "description", None) if code < 500 else SERVER_ERROR
    return render_template("error.html", title=title, message=message), code


def install_error_pages(app: Flask) -> None:
    """Answer each of ERROR_CODES with the error page."""
    for code in ERROR_CODES:
        app.register_error_handler(code, error_page)
