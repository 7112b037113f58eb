"""Prometheus metrics that stay correct under several gunicorn workers.

Counters use prometheus_client's multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn.conf.py sets it for the whole
server), so a scrape that lands on any worker sees the sum over all of them.
Inbox gauges are read from the inbox itself at scrape time, which every
process shares already.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

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

from receiver.inbox import STATES, InboxStats

CALLBACKS = Counter(
    "receiver_callbacks_total",
    "Callbacks answered, by product and outcome.",
    ["source", "outcome"],
)
CALLBACK_SECONDS = Histogram(
    "receiver_callback_seconds",
    "Time to answer a callback, body read to answer.",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class InboxCollector:
    """Records per inbox state and rejections per reason, read from the inbox when scraped."""

    def __init__(self, inbox: InboxStats):
        self._inbox = inbox

    def collect(self) -> Iterable[Metric]:
        states = GaugeMetricFamily("receiver_inbox_records", "Inbox records by state.", labels=["state"])
        reasons = GaugeMetricFamily(
            "receiver_rejected_callbacks", "Callbacks rejected by reconciliation, by reason.", labels=["reason"]
        )
        try:
            counts = self._inbox.counts_by_state()
            rejections = self._inbox.rejections_by_reason()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the inbox does
            counts, rejections = {}, {}
        for state in STATES:
            states.add_metric([state], counts.get(state, 0))
        for reason, count in sorted(rejections.items()):
            reasons.add_metric([reason or "unknown"], count)
        yield states
        yield reasons


def render(inbox: InboxStats) -> tuple[bytes, str]:
    """The text exposition of every metric, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counters = CollectorRegistry()
        MultiProcessCollector(counters)
    else:
        counters = REGISTRY
    from_inbox = CollectorRegistry()
    from_inbox.register(InboxCollector(inbox))
    return generate_latest(counters) + generate_latest(from_inbox), CONTENT_TYPE_LATEST
