"""Security headers on every response: the Content-Security-Policy (the EHRs that may frame
Handoff are named by the registrations), no sniffing, no referrer, and no caching of pages
that hold PHI."""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response


def content_security_policy(frame_ancestors: Iterable[str]) -> str:
    """The CSP: only Handoff's own scripts, styles and images; forms post, and pages are
    framed, only by Handoff and the given EHR origins."""
    ancestors = " ".join(sorted(set(frame_ancestors)))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"form-action 'self' {ancestors}; frame-ancestors 'self' {ancestors}"
    )


def add_security_headers(response: Response, policy: str) -> Response:
    """The headers on one response; a view that chose its own Cache-Control keeps it."""
    response.headers["Content-Security-Policy"] = policy
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    # Pages hold PHI: never cached. A view that chose its own policy keeps it (the JWKS
    # is public and EHRs should cache it).
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def install_security_headers(app: Flask, policy: str) -> None:
    """Set the headers on every response of `app`."""

    @app.after_request
    def security_headers(response: Response) -> Response:
        return add_security_headers(response, policy)
