"""Operations: what a hospital's operators run Handoff with.

- `/healthz` (alive: the process answers, nothing else is touched) and `/readyz` (the
  database answers, its schema is at the newest migration, EHR registrations and the rule
  pack are loaded and the rules on disk still load; 503 naming what failed): health.py,
  views.py.
- Prometheus metrics at `/metrics` (prometheus-client; multi-process under gunicorn, see
  smartapp/web/gunicorn_conf.py): launches, suggestions shown and accepted by kind, write
  outcomes by EHR (all counted from the referral log's events as they commit), the outbox's
  depth and the age of its oldest queued write (read at scrape time), FHIR and CDS Hooks
  latencies: metrics.py, events.py.
- A request id on every request (X-Request-Id taken from the caller when well formed, else
  made; sent back on the response) and structured JSON logs carrying it (LOG_FORMAT), with
  query strings, bearer tokens and JWTs cut: requestid.py, smartapp/web/logs.py.

Nothing here reads or logs PHI: the metrics' labels are kinds, outcomes, EHR hosts and
routes, never a patient, a visit or a token.
"""

from __future__ import annotations

from flask import Flask

from smartapp.web.logs import use_json_logs


def init_app(app: Flask) -> None:
    """Install the request id, the metrics and the health routes; JSON logs unless
    LOG_FORMAT says "text" (the demo's default)."""
    from smartapp.ops import events, metrics, requestid, views

    fmt = app.config.get("LOG_FORMAT") or ("text" if app.config.get("DEMO") else "json")
    if fmt == "json":
        use_json_logs()
    requestid.install(app)
    metrics.install(app)
    events.install()
    app.register_blueprint(views.bp)
