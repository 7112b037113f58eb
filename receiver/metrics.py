"""Prometheus metrics that stay correct under several gunicorn workers, the worker and the sweeper (SPEC 10).

Counters and histograms use prometheus_client's multiprocess mode: each
process writes its own figures to files in one directory per deployment and
host (`receiver.metrics_dir`: under the temporary directory, one per INBOX_URL
and boot; or the operator's ``PROMETHEUS_MULTIPROC_DIR``), and a scrape that
lands on any gunicorn worker sums the files of every process: the web
workers' door answers, the worker processes' forwarded events and Describe
calls, the sweeper's runs. The directory is named before prometheus_client
is imported, which is when it chooses its mode: by gunicorn.conf.py for the
web, at the top of this module for every other process.

Nothing deletes the directory: a process that exits or restarts (a worker
after kill -9, a deploy) leaves its files, and its counts go on being summed
with those of the processes after it. That is right for counters: they only
grow for the life of the deployment on this host (a new pid writes a file of
its own; a reused pid continues its file). The directory grows by a few small
files per process started; remove it only when every process of the
deployment is stopped. Only counters and histograms are kept there: the
gauges are read from the inbox itself at scrape time, which every process
shares already.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from receiver.metrics_dir import share_host_directory

# Before prometheus_client is first imported, in processes gunicorn.conf.py did not start: its mode is chosen then.
share_host_directory()

from prometheus_client import (  # noqa: E402 - after the directory is named (above)
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

from receiver.inbox import STATES, InboxStats  # noqa: E402

if TYPE_CHECKING:
    from receiver.health import HealthBoard
    from receiver.inbox import Inbox

# --- the web processes ------------------------------------------------------------------

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

# --- the worker -------------------------------------------------------------------------

EVENTS_FORWARDED = Counter(
    "receiver_events_forwarded_total",
    "Events the sink took, by product and event type.",
    ["source", "event_type"],
)
ACCEPT_TO_FORWARD_SECONDS = Histogram(
    "receiver_accept_to_forward_seconds",
    "From a callback's acceptance into the inbox to its event taken by the sink.",
    # From a batch's flush (50 ms) through the patience for a lagging Describe (tens of seconds)
    # to a sink or Tencent Cloud outage (minutes).
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)

# --- the worker and the sweeper ---------------------------------------------------------

DESCRIBE_CALLS = Counter(
    "receiver_describe_calls_total",
    "Tencent Cloud API calls answered, by service, action and outcome (ok, not_found, rate_limited, error).",
    ["service", "action", "outcome"],
)

# --- the sweeper ------------------------------------------------------------------------

SWEEPS = Counter(
    "receiver_sweeps_total",
    "Sweeps of a product that listed every page of its finished tasks.",
    ["source"],
)
SWEPT_MISSING = Counter(
    "receiver_swept_missing_total",
    "Finished tasks the sweeper found never called back (put in the inbox), by product.",
    ["source"],
)


def count_forwarded(sent: Iterable[tuple[dict[str, Any], float]], now: float) -> None:
    """Count the events the sink took, given as (event, its record's received_at), and how long each took.

    An event counts once however many records of the batch carry it (a late callback and the sweeper's
    record of its task, two callbacks of one state change): the histogram then has one observation per
    event, from the earliest of its records.
    """
    earliest: dict[str, tuple[dict[str, Any], float]] = {}
    for event, received_at in sent:
        known = earliest.get(event["event_id"])
        if known is None or received_at < known[1]:
            earliest[event["event_id"]] = (event, received_at)
    for event, received_at in earliest.values():
        EVENTS_FORWARDED.labels(event["source"], event["event_type"]).inc()
        ACCEPT_TO_FORWARD_SECONDS.observe(max(0.0, now - received_at))


class InboxCollector:
    """Records per inbox state, rejections per reason, dead letters and the oldest unsettled record's age,
    read from the inbox when scraped."""

    def __init__(self, inbox: InboxStats):
        self._inbox = inbox

    def collect(self) -> Iterable[Metric]:
        states = GaugeMetricFamily("receiver_inbox_records", "Inbox records by state.", labels=["state"])
        reasons = GaugeMetricFamily(
            "receiver_rejected_callbacks", "Callbacks rejected by reconciliation, by reason.", labels=["reason"]
        )
        dead = GaugeMetricFamily("receiver_dead_letters", "Records buried as dead letters.")
        oldest = GaugeMetricFamily(
            "receiver_inbox_oldest_pending_seconds",
            "Age of the oldest record not yet settled (pending or leased); 0 when there is none.",
        )
        read = True
        try:
            counts = self._inbox.counts_by_state()
            rejections = self._inbox.rejections_by_reason()
            age = self._inbox.oldest_pending_age(time.time())
        except Exception:  # noqa: BLE001 - a scrape must not fail because the inbox does
            counts, rejections, age, read = {}, {}, None, False
        for state in STATES:
            states.add_metric([state], counts.get(state, 0))
        for reason, count in sorted(rejections.items()):
            reasons.add_metric([reason or "unknown"], count)
        if read:  # an inbox that cannot be read says nothing about its dead letters, rather than 0
            dead.add_metric([], counts.get("dead", 0))
        if age is not None:  # None: this inbox cannot tell (SQS), or could not be read
            oldest.add_metric([], age)
        yield states
        yield reasons
        yield dead
        yield oldest


class ReadinessCollector:
    """`receiver_ready{check}`: the /readyz checks as 1 (ok, or not reported yet) or 0 (unavailable, failing)."""

    def __init__(self, inbox: Inbox, board: HealthBoard):
        self._inbox = inbox
        self._board = board

    def collect(self) -> Iterable[Metric]:
        from receiver.health import readiness

        ready = GaugeMetricFamily("receiver_ready", "Each /readyz check: 1 while fine, 0 while failing.",
                                  labels=["check"])
        for check, status in readiness(self._inbox, self._board).items():
            ready.add_metric([check], 0 if status in ("unavailable", "failing") else 1)
        yield ready


def render(inbox: InboxStats, board: HealthBoard | None = None) -> tuple[bytes, str]:
    """The text exposition of every metric, and its content type (with `board`, the readiness checks too)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counters = CollectorRegistry()
        MultiProcessCollector(counters)
    else:
        counters = REGISTRY
    from_inbox = CollectorRegistry()
    from_inbox.register(InboxCollector(inbox))
    if board is not None:
        from_inbox.register(ReadinessCollector(inbox, board))
    return generate_latest(counters) + generate_latest(from_inbox), CONTENT_TYPE_LATEST
