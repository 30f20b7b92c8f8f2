"""The outbox worker: delivers queued referrals until they land. Runs as its own process
(`handoff outbox worker`) or as a thread beside the web app (`handoff serve`, the demo). It
keeps nothing in memory that matters: the database holds every referral, so a restart (or a
crash) resumes where it stopped, and leases keep two workers off the same row."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask

from smartapp.db import Referral
from smartapp.fhir.client import FhirClient
from smartapp.launch import sessions
from smartapp.services import Services, current_services
from smartapp.writeback import outbox

log = logging.getLogger("handoff.worker")


def session_client(services: Services) -> outbox.ClientFor:
    """The FHIR client for a referral's writes: its launch's stored token while the launch
    lives (refreshed as usual), else Handoff's backend services token at that EHR where the
    registration has a `backend:` block; else CredentialsUnavailable says what the write
    waits for (sessions.client_for_referral)."""

    def client_for(referral: Referral, force_refresh: bool = False) -> FhirClient:
        return sessions.client_for_referral(services, referral, force_refresh)

    return client_for


def confirm_wait(config: Mapping[str, Any]) -> float:
    """OUTBOX_CONFIRM_WAIT_SECONDS (see outbox.CONFIRM_WAIT_SECONDS)."""
    return float(config.get("OUTBOX_CONFIRM_WAIT_SECONDS", outbox.CONFIRM_WAIT_SECONDS))


def deliver_now(services: Services, referral_id: str, config: Mapping[str, Any]) -> None:
    """Try a queued referral's writes at once (after a coach's change, say); the worker
    retries if the EHR is away."""
    referral = outbox.get(services.db, referral_id)
    if referral is not None and referral.status == "queued":
        outbox.deliver(
            services.db, referral_id, session_client(services), confirm_wait=confirm_wait(config)
        )


class OutboxWorker:
    """Polls for due referrals and delivers each under a lease."""

    def __init__(self, app: Flask, poll_seconds: float = 1.0) -> None:
        self.app = app
        self.poll_seconds = poll_seconds
        self.owner = f"worker-{secrets.token_hex(6)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Deliver what is due now; returns how many referrals were attempted."""
        with self.app.app_context():
            services = current_services()
            due = outbox.due(services.db)
            for referral_id in due:
                try:
                    outbox.deliver(
                        services.db,
                        referral_id,
                        session_client(services),
                        owner=self.owner,
                        confirm_wait=confirm_wait(self.app.config),
                    )
                except Exception:  # one bad row must not stop the others; it stays queued
                    log.exception("delivery crashed: referral=%s", referral_id[:8])
            return len(due)

    def run_forever(self) -> None:
        log.info("outbox worker %s started", self.owner)
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("outbox worker pass failed; retrying")
            self._stop.wait(self.poll_seconds)
        log.info("outbox worker %s stopped", self.owner)

    def start(self) -> OutboxWorker:
        self._thread = threading.Thread(target=self.run_forever, name=self.owner, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
