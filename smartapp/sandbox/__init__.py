"""Handoff's sandbox EHR: a FHIR R4 server with a SMART App Launch authorization server and
chart screens, on its own origin. The app reaches it only over HTTP; it imports nothing
from `smartapp` but `smartapp.web.serving`.

    from smartapp.sandbox import create_sandbox_app, SandboxClient
"""

from smartapp.sandbox.app import create_sandbox_app
from smartapp.sandbox.config import SandboxClient

__all__ = ["SandboxClient", "create_sandbox_app"]
