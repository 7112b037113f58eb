"""The figures of a pipeline run: per Describe action, per run, and what makes a run fail."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.pipeline_callbacks import FINISH_ONLY, Step, unexpected_answers
from bench.pipeline_observe import StatsTimeline


@dataclass
class ActionFigures:
    action: str
    limit: int | None
    calls: int
    span_s: float
    max_1s: int
    max_1s_attempted: int
    rate_limited: int
    errors: dict[str, int]
    max_in_flight: int | None
    timed_by: str = "stats polling"  # or "call log": where the first and last call times come from

    @property
    def share(self) -> float:
        """Calls admitted over what the limit allows from the first call to the last.

        A limiter that lets a full window through at once scores a little above 1 on a short backlog
        (100 calls at t=0, 100 at t=1, 22 at t=2: 222 / (100 x 2) = 1.11): the measure is for backlogs of
        many windows.
        """
        admitted = self.calls - self.rate_limited
        if not self.limit or admitted < 2 or self.span_s <= 0:
            return math.nan
        return admitted / (self.limit * self.span_s)


@dataclass
class Probe:
    latencies: list[float]
    answers: Counter[str]
    posted: int


@dataclass
class RunResult:
    kind: str
    latency: float
    tasks: int
    callbacks: int
    answers: Counter[str]
    steps: tuple[Step, ...]
    expected: set[str]
    seen: Counter[str]
    forwarded: dict[str, float]
    actions: list[ActionFigures]
    describe_calls: int
    accept_to_forward: list[float]
    rss_before_kib: int
    rss_after_kib: int
    drain_s: float
    unsettled: int
    emulator_call_ms: float = math.nan
    sqs_calls: Counter[str] | None = None
    probe: Probe | None = None

    @property
    def missing(self) -> int:
        return len(self.expected - set(self.seen))

    @property
    def doubled(self) -> int:
        return sum(n - 1 for n in self.seen.values() if n > 1)

    @property
    def unexpected(self) -> int:
        return len(set(self.seen) - self.expected)

    @property
    def events_per_s(self) -> float:
        times = sorted(t for e, t in self.forwarded.items() if e in self.expected)
        return len(times) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else math.nan

    @property
    def calls_per_callback(self) -> float:
        return self.describe_calls / self.callbacks if self.callbacks else math.nan

    @property
    def sqs_calls_per_event(self) -> float:
        if self.sqs_calls is None or not self.expected:
            return math.nan
        return sum(self.sqs_calls.values()) / len(self.expected)

    def problems(self) -> list[str]:
        """What makes this run fail: events lost or doubled, limits exceeded, the door answering otherwise."""
        where = f"{self.kind} at {self.latency * 1000:g} ms"
        found = []
        if self.missing or self.doubled or self.unexpected:
            found.append(f"{where}: {self.missing} event(s) missing, {self.doubled} doubled, "
                         f"{self.unexpected} unexpected, of {len(self.expected)}")
        for a in self.actions:
            if a.rate_limited:
                found.append(f"{where}: {a.action} answered RequestLimitExceeded {a.rate_limited} time(s)")
            if a.limit is not None and a.max_1s > a.limit:
                found.append(f"{where}: {a.action} admitted {a.max_1s} calls in one second, limit {a.limit}")
        odd = unexpected_answers(self.answers, self.steps)
        if odd:
            found.append(f"{where}: unexpected door answers {odd}")
        if self.probe is not None and unexpected_answers(self.probe.answers, FINISH_ONLY):
            found.append(f"{where}: unexpected door answers to the probe {dict(self.probe.answers)}")
        if self.probe is not None and len(self.probe.latencies) != self.probe.posted:
            found.append(f"{where}: the probe timed {len(self.probe.latencies)} of {self.probe.posted} callbacks")
        return found


def action_figures(before: dict[str, Any], after: dict[str, Any], timeline: StatsTimeline,
                   log_times: dict[str, list[float]] | None) -> list[ActionFigures]:
    """Per Describe action the worker called: its calls in the run, its span, its busiest second, its errors.

    An action's span comes from the emulator's call log when the log holds exactly this run's admitted calls
    of it (not cut short, none of the bench's own); otherwise from polling the stats.
    """
    figures = []
    for action, now in sorted(after.items()):
        if not action.split(".", 1)[1].startswith("Describe"):
            continue
        then = before.get(action, {"calls": 0, "errors": {}})
        calls = now["calls"] - then["calls"]
        if calls <= 0:
            continue
        errors = {code: n - then["errors"].get(code, 0) for code, n in now["errors"].items()
                  if n - then["errors"].get(code, 0) > 0}
        figure = ActionFigures(
            action, now.get("limit"), calls, 0.0, now["max_1s_window"], now.get("max_1s_window_attempted", 0),
            errors.get("RequestLimitExceeded", 0), errors, now.get("max_in_flight"))
        times = (log_times or {}).get(action, [])
        if times and calls - figure.rate_limited <= len(times) <= calls:
            figure.span_s, figure.timed_by = max(times) - min(times), "call log"
        elif action in timeline.first:
            figure.span_s = timeline.last[action] - timeline.first[action]
        figures.append(figure)
    return figures


def describe_calls(figures: list[ActionFigures]) -> int:
    return sum(f.calls for f in figures)
