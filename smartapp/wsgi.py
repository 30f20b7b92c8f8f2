"""WSGI entry for production servers: `gunicorn 'smartapp.wsgi:app'` (run the outbox worker
beside it with `handoff outbox worker`)."""

from smartapp import create_app

app = create_app()
