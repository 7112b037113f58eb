"""The pipeline benchmark's report: its header, a Markdown table per kind of run, and the targets met or missed."""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
from collections.abc import Callable
from importlib import metadata

from bench.common import filesystem_of, percentile, print_command_and_machine
from bench.pipeline_observe import POLL_SECONDS
from bench.pipeline_results import ActionFigures, RunResult
from bench.pipeline_soak import SoakResult
from bench.pipeline_stack import CREATING_LIMIT, DESCRIBE_ACTIONS, Setup
from bench.processes import ROOT

TARGET_LIMIT_SHARE = 0.95
TARGET_CALLS_PER_CALLBACK = 0.35
TARGET_SQS_CALLS_PER_EVENT = 0.15
TARGET_RSS_GROWTH = 0.10
TARGET_IDLE_P50_S = 0.250


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def _num(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _pct(values: list[float], q: float) -> float:
    return percentile(values, q) if values else math.nan


def _action_cell(result: RunResult, fmt: Callable[[ActionFigures], str]) -> str:
    return " / ".join(f"{a.action.replace('DescribeTaskDetail', 'DTD').replace('DescribeBatchTaskDetail', 'DBTD')} "
                      f"{fmt(a)}" for a in result.actions if a.action in DESCRIBE_ACTIONS) or "-"


def print_run_table(title: str, results: list[RunResult]) -> None:
    """One Markdown table, one row per latency."""
    if not results:
        return
    sqs = any(r.sqs_calls is not None for r in results)
    print(f"\n### {title}\n")
    head = ["latency", "tasks", "callbacks", "events", "events/s", "share of limit", "max calls in 1 s (limit)",
            "RequestLimitExceeded", "Describe calls/callback", "accept->fwd p50 ms", "p99 ms",
            "RSS start MiB", "RSS end MiB", "missing", "doubled"]
    if sqs:
        head.insert(9, "SQS calls/event")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        row = [f"{r.latency * 1000:g} ms", str(r.tasks), str(r.callbacks), str(len(set(r.seen) & r.expected)),
               _num(r.events_per_s, 1), _action_cell(r, lambda a: _num(a.share)),
               _action_cell(r, lambda a: f"{a.max_1s} ({a.limit})"), str(sum(a.rate_limited for a in r.actions)),
               _num(r.calls_per_callback, 3), _ms(_pct(r.accept_to_forward, 50)), _ms(_pct(r.accept_to_forward, 99)),
               f"{r.rss_before_kib / 1024:.1f}", f"{r.rss_after_kib / 1024:.1f}", str(r.missing), str(r.doubled)]
        if sqs:
            row.insert(9, _num(r.sqs_calls_per_event, 3))
        print("| " + " | ".join(row) + " |")
    print()
    for r in results:
        details = ", ".join(f"{a.action} {a.calls} calls in {a.span_s:.2f} s ({a.timed_by}; most attempted in "
                            f"1 s: {a.max_1s_attempted})"
                            + (f" (max in flight {a.max_in_flight})" if a.max_in_flight is not None else "")
                            for a in r.actions)
        notes = (f"  {r.latency * 1000:g} ms: drained in {r.drain_s:.1f} s; emulator's own time per call "
                 f"{r.emulator_call_ms:.1f} ms + the latency; {details}")
        if r.sqs_calls is not None:
            notes += f"; SQS {dict(r.sqs_calls)}"
        if r.unsettled:
            notes += f"; {r.unsettled} inbox record(s) still unsettled"
        print(notes)
    print(f"  (stats polled every {POLL_SECONDS * 1000:g} ms: a span from polling is good to +-{POLL_SECONDS:g} s; "
          f"door answers: {', '.join(f'{k} {v}' for k, v in sorted(results[0].answers.items()))})")


def print_probe_table(results: list[RunResult]) -> None:
    probed = [r for r in results if r.probe is not None]
    if not probed:
        return
    print("\n### Idle probe: one callback at a time, ~200 ms apart, worker idle\n")
    print("| latency | callbacks | accept->fwd p50 ms | p99 ms | p50 minus one call's latency ms |")
    print("|---|---|---|---|---|")
    for r in probed:
        assert r.probe is not None
        p50 = _pct(r.probe.latencies, 50)
        print(f"| {r.latency * 1000:g} ms | {len(r.probe.latencies)} | {_ms(p50)} | "
              f"{_ms(_pct(r.probe.latencies, 99))} | {_ms(p50 - r.latency)} |")


def print_soak(soak: SoakResult | None) -> None:
    if soak is None:
        return
    print("\n### Soak: worker RSS as events are forwarded (latency 0, limits raised, tasks fed while it runs)\n")
    print("| events forwarded | worker RSS MiB |")
    print("|---|---|")
    print(f"| 0 (worker started) | {soak.start_rss_kib / 1024:.1f} |")
    for count, rss in soak.samples:
        print(f"| {count} | {rss / 1024:.1f} |")
    print(f"\n  {soak.events} events in {soak.wall_s:.0f} s ({soak.events / soak.wall_s:.0f}/s; the emulator's own "
          f"time per call {soak.emulator_call_ms:.1f} ms); {soak.missing} missing, {soak.doubled} doubled, "
          f"{soak.unexpected} unexpected; the emulator's callbacks: {dict(soak.answers)}")


def _verdict(ok: bool | None) -> str:
    return "not run" if ok is None else ("PASS" if ok else "FAIL")


Row = tuple[str, str, str]  # target, measured, verdict


def _share_row(label: str, runs: list[RunResult]) -> list[Row]:
    shares = [(r, a) for r in runs for a in r.actions if a.action in DESCRIBE_ACTIONS]
    if not shares:
        return []
    run, worst = min(shares, key=lambda ra: -1 if math.isnan(ra[1].share) else ra[1].share)
    return [(f">= {TARGET_LIMIT_SHARE} of each limit at every latency ({label})",
             f"lowest {_num(worst.share)} ({worst.action} at {run.latency * 1000:g} ms)",
             _verdict(all(a.share >= TARGET_LIMIT_SHARE for _, a in shares)))]


def _calls_row(label: str, runs: list[RunResult]) -> list[Row]:
    if not runs:
        return []
    worst = max(r.calls_per_callback for r in runs)
    return [(f"<= {TARGET_CALLS_PER_CALLBACK} Describe calls per callback ({label})", f"highest {_num(worst, 3)}",
             _verdict(worst <= TARGET_CALLS_PER_CALLBACK))]


def _sqs_row(runs: list[RunResult]) -> Row:
    worst = max((r.sqs_calls_per_event for r in runs), default=math.nan)
    return (f"<= {TARGET_SQS_CALLS_PER_EVENT} SQS calls per event", _num(worst, 3),
            _verdict(None if not runs else worst <= TARGET_SQS_CALLS_PER_EVENT))


def _rss_row(soak: SoakResult | None) -> Row:
    if soak is None or len(soak.samples) < 2:
        return f"worker RSS within {TARGET_RSS_GROWTH:.0%} from 10k to 100k events (--soak)", "n/a", "not run"
    return (f"worker RSS within {TARGET_RSS_GROWTH:.0%} from {soak.samples[0][0]} to {soak.samples[-1][0]} events",
            f"{soak.growth:+.1%}", _verdict(abs(soak.growth) <= TARGET_RSS_GROWTH))


def _probe_rows(runs: list[RunResult]) -> list[Row]:
    rows = []
    for r in runs:
        if r.probe is None:
            continue
        p50 = _pct(r.probe.latencies, 50)
        verdict = _verdict(p50 < TARGET_IDLE_P50_S) if r.latency < TARGET_IDLE_P50_S else \
            "n/a (one Describe call takes longer)"
        rows.append((f"idle accept->forward p50 < {TARGET_IDLE_P50_S * 1000:g} ms at {r.latency * 1000:g} ms",
                     f"{_ms(p50)} ms", verdict))
    return rows


def targets(backlog: list[RunResult], batch: list[RunResult], sqs: list[RunResult],
            soak: SoakResult | None) -> list[Row]:
    """(target, measured, verdict) for each target, over every run that was made."""
    runs = (("backlog", backlog), ("batch", batch), ("sqs", sqs))
    return [
        *(row for label, group in runs for row in _share_row(label, group)),
        *(row for label, group in runs for row in _calls_row(label, group)),
        _sqs_row(sqs), _rss_row(soak), *_probe_rows(backlog),
    ]


def print_targets(rows: list[Row]) -> None:
    print("\n### Targets\n")
    print("| target | measured | verdict |")
    print("|---|---|---|")
    for target, measured, verdict in rows:
        print(f"| {target} | {measured} | {verdict} |")


def print_header(args: argparse.Namespace, setup: Setup) -> None:
    print("Pipeline benchmark: worker throughput against the Tencent Cloud emulator, at injected API latency")
    print_command_and_machine("bench.pipeline")
    print(f"  software:  Python {platform.python_version()}, gunicorn {metadata.version('gunicorn')}, "
          f"tencentcloud-sdk {metadata.version('tencentcloud-sdk-python-common')}, moto {metadata.version('moto')}")
    print(f"  code:      {ROOT} ({_git_head()})")
    print("  emulator:  python -m emulator")
    print("  processes: per run a fresh emulator, gunicorn -c gunicorn.conf.py --no-control-socket app:app "
          "(WEB_CONCURRENCY=2, WORKER_IN_WEB=false),")
    print("             then python -m receiver.worker once every callback is queued")
    print(f"  limits:    emulator defaults (mps/vod DescribeTaskDetail 100/s, mps DescribeBatchTaskDetail 20/s, "
          f"ams DescribeTaskDetail 20/s); creating actions {CREATING_LIMIT}/s")
    print(f"  callbacks: per task PROCESSING, FINISH, FINISH again under a fresh signature (answered duplicate), "
          f"signed with receiver.auth; ~{args.callbacks} per run, MPS/VOD/AMS mixed")
    print(f"  inbox:     SQLite under {setup.tmp} ({filesystem_of(setup.tmp)})")
    print(flush=True)


def _git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "receiver"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return f"{head}{' + uncommitted changes under receiver/' if dirty else ''}"


def print_progress(result: RunResult) -> None:
    print(f"  done in {result.drain_s:.1f} s: {len(set(result.seen) & result.expected)}/{len(result.expected)} "
          f"events, {_num(result.events_per_s, 1)} events/s, {_num(result.calls_per_callback, 3)} Describe calls per "
          f"callback", flush=True)
