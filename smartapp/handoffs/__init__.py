"""Warm handoffs after Sign: the lifecycle (pure rules), `service.record` (the one path every
change takes), and the follow-up plan after the ED visit. Flask-free."""
