"""Prometheus metrics (prometheus-client). Under gunicorn every worker writes its values to
PROMETHEUS_MULTIPROC_DIR (gunicorn_conf.py makes a fresh one per start and tells
prometheus-client when a worker exits) and `/metrics` adds them up; a single process uses
the default registry. Labels are kinds, outcomes, EHR hosts and routes: never a patient, a
visit or a token.

Counted from the referral log as events commit (events.py): launches, suggestions shown and
accepted by kind, write outcomes by EHR. Read at scrape time (`OutboxCollector`): the
outbox's depth and the age of its oldest queued write. Timed: FHIR requests to each EHR (a
response hook on the EHR connection pools) and CDS Hooks calls (the /cds-services routes),
and every request by route.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

LAUNCHES = Counter("handoff_launches_total", "SMART launches completed (a launch context made)")
SHOWN = Counter(
    "handoff_suggestions_shown_total", "Suggestions shown to a physician, by kind", ["kind"]
)
ACCEPTED = Counter(
    "handoff_suggestions_accepted_total", "Suggestions accepted at Sign, by kind", ["kind"]
)
DECLINED = Counter(
    "handoff_suggestions_declined_total", "Suggestions declined at Sign, by kind", ["kind"]
)
WRITES = Counter(
    "handoff_write_attempts_total",
    "Write-back attempts by EHR (host) and outcome (written, queued: retried, failed, held)",
    ["ehr", "outcome"],
)
FHIR_SECONDS = Histogram(
    "handoff_fhir_request_seconds",
    "FHIR and OAuth requests to an EHR: time to the answer's headers, by EHR host, method and "
    "status class",
    ["ehr", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
CDS_SECONDS = Histogram(
    "handoff_cds_request_seconds",
    "CDS Hooks calls answered by Handoff (discovery and services), by route and status class",
    ["route", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_SECONDS = Histogram(
    "handoff_http_request_seconds",
    "Requests Handoff answered, by route (the URL rule, never the URL) and status class",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)


def ehr_label(url: str) -> str:
    """The EHR an URL belongs to, as a label: its host[:port] (a handful per deployment)."""
    return urlsplit(url).netloc or "unknown"


def observe_fhir(response, *args, **kwargs):  # a requests response hook
    """Time one answer from an EHR (requests measured it: sending to the headers parsed)."""
    with contextlib.suppress(Exception):  # a metric must never break a write to the chart
        FHIR_SECONDS.labels(
            ehr_label(response.url),
            response.request.method or "GET",
            f"{response.status_code // 100}xx",
        ).observe(response.elapsed.total_seconds())
    return response


class OutboxCollector(Collector):
    """The outbox read at scrape time: queued referrals and the age of the oldest."""

    def __init__(self, services_of) -> None:
        self._services_of = services_of

    def collect(self) -> Iterator[Metric]:
        from smartapp.ops.outbox_figures import queue_figures

        depth = GaugeMetricFamily(
            "handoff_outbox_depth", "Referrals with writes still queued for the EHR"
        )
        age = GaugeMetricFamily(
            "handoff_outbox_oldest_age_seconds",
            "Age of the oldest referral whose writes are still queued (0 when none)",
        )
        try:
            count, oldest = queue_figures(self._services_of().db)
        except Exception:  # the database is away: readyz says so; no figure rather than a lie
            return
        depth.add_metric([], count)
        age.add_metric([], oldest)
        yield depth
        yield age


def exposition(services_of) -> bytes:
    """The text exposition: this process's (or every worker's) values and the outbox's."""
    outbox = CollectorRegistry(auto_describe=False)
    outbox.register(OutboxCollector(services_of))
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        counted = generate_latest(registry)
    else:
        counted = generate_latest(REGISTRY)
    return counted + generate_latest(outbox)


def _start_timer() -> None:
    g.ops_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("ops_started", None)
    if started is None:
        return response
    elapsed = time.perf_counter() - started
    route = request.url_rule.rule if request.url_rule is not None else "(no route)"
    status = f"{response.status_code // 100}xx"
    HTTP_SECONDS.labels(route, request.method, status).observe(elapsed)
    if route.startswith("/cds-services"):
        CDS_SECONDS.labels(route, status).observe(elapsed)
    return response


def install(app: Flask) -> None:
    """Time every request; FHIR answers are timed by the EHR connection pools' hook."""
    app.before_request(_start_timer)
    app.after_request(_observe)
    import importlib

    try:  # the EHR connection pools (smartapp.fhir.http) call the hook on every answer
        hooks = importlib.import_module("smartapp.fhir.http").RESPONSE_HOOKS
    except (ImportError, AttributeError):
        return
    if observe_fhir not in hooks:
        hooks.append(observe_fhir)


__all__ = ["CONTENT_TYPE_LATEST", "exposition", "install", "observe_fhir"]
