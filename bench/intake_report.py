"""The intake benchmark's report: its header, a table per round, the summary and the ratios receiver/bare."""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import statistics
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import filesystem_of, percentile, print_command_and_machine
from bench.intake_load import Load, Phase
from bench.processes import Server
from bench.wrk import wrk_version


def _ms(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{value:6.2f}"


def print_round(phases: list[Phase]) -> None:
    """One line per server; CPU columns in cores (CPU seconds per wall second)."""
    print(
        f"  {'server':<9} {'req/s':>8} {'requests':>8} {'inbox +':>7} {'probe n':>7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'srv cpu':>7} {'per worker':>10} {'us/req':>6} {'wrk cpu':>7} {'probe cpu':>9}"
    )
    for p in phases:
        inbox = "-" if p.inbox_delta is None else str(p.inbox_delta)
        print(
            f"  {p.server:<9} {p.wrk.requests_per_s:8.1f} {p.wrk.requests:8d} {inbox:>7} {p.probe.accepted:7d} "
            f"{_ms(p.probe.percentile_ms(50)):>7} {_ms(p.probe.percentile_ms(99)):>7} "
            f"{p.server_cores:7.2f} {'+'.join(f'{c / p.wall_s:.2f}' for c in p.worker_cpu_s):>10} "
            f"{p.server_cpu_us_per_request:6.0f} {p.wrk_cpu_s / p.wall_s:7.2f} "
            f"{p.probe.cpu_s / p.wall_s:9.2f}"
        )
    by_name = {p.server: p for p in phases}
    if "receiver" in by_name and "bare" in by_name:
        ratio = by_name["receiver"].wrk.requests_per_s / by_name["bare"].wrk.requests_per_s
        print(f"  receiver/bare req/s: {ratio:.3f}")


def summarize(phases: list[Phase]) -> dict[str, dict[str, Any]]:
    """Per server: req/s of each round and their mean, and p50/p99 of all probe samples pooled."""
    summary: dict[str, dict[str, Any]] = {}
    for name in ("receiver", "bare"):
        mine = [p for p in phases if p.server == name and p.round > 0]
        samples = [s for p in mine for s in p.probe.samples]
        rates = [p.wrk.requests_per_s for p in mine]
        summary[name] = {
            "rates": rates,
            "mean": statistics.fmean(rates),
            "p50": percentile(samples, 50) * 1000,
            "p99": percentile(samples, 99) * 1000,
            "samples": len(samples),
            "cores": statistics.fmean(p.server_cores for p in mine),
            "us_per_request": statistics.fmean(p.server_cpu_us_per_request for p in mine),
        }
    return summary


def print_summary(summary: dict[str, dict[str, Any]]) -> None:
    print("\nSummary (req/s: mean of rounds; latency: all probe samples of all rounds)")
    print(
        f"  {'server':<9} {'mean req/s':>10}  {'per round':<26} {'probe n':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'srv cpu':>7} {'us/req':>6}"
    )
    for name, s in summary.items():
        rounds = ", ".join(f"{r:.1f}" for r in s["rates"])
        print(
            f"  {name:<9} {s['mean']:10.1f}  {rounds:<26} {s['samples']:7d} "
            f"{_ms(s['p50']):>7} {_ms(s['p99']):>7} {s['cores']:7.2f} {s['us_per_request']:6.0f}"
        )
    receiver, bare = summary["receiver"], summary["bare"]
    per_round = [r / b for r, b in zip(receiver["rates"], bare["rates"], strict=True)]
    print(
        f"\n  ratio receiver/bare, req/s: {receiver['mean'] / bare['mean']:.3f}"
        f"  (rounds: {', '.join(f'{r:.3f}' for r in per_round)})"
    )
    print(f"  ratio receiver/bare, probe p50: {receiver['p50'] / bare['p50']:.2f}x"
          f"  p99: {receiver['p99'] / bare['p99']:.2f}x")
    print(f"  ratio receiver/bare, server CPU per request: "
          f"{receiver['us_per_request'] / bare['us_per_request']:.2f}x")
    print("  (srv cpu: server cores busy, CPU s per wall s, of 2 workers + master; us/req: server CPU"
          " per answered request)")

def print_header(args: argparse.Namespace, load: Load, servers: list[Server], body_bytes: int,
                 tmp: Path) -> None:
    print("Intake benchmark: receiver vs bare Flask, identical gunicorn settings, alternating rounds")
    print_command_and_machine("bench.intake")
    print(f"  software:  Python {platform.python_version()}, gunicorn {metadata.version('gunicorn')}, "
          f"Flask {metadata.version('flask')}, {wrk_version(load.wrk)}")
    per_worker = f" x GUNICORN_THREADS={args.threads} threads" if args.worker_class == "gthread" else ""
    print(f"  gunicorn:  gunicorn.conf.py, GUNICORN_WORKER_CLASS={args.worker_class}, "
          f"WEB_CONCURRENCY={args.workers} workers{per_worker} (both servers)")
    for server in servers:
        print(f"  {server.name + ':':<10} PORT={server.port} {shlex.join(server.command)}")
    print(f"  inbox:     {tmp / 'inbox.db'} ({filesystem_of(tmp)})")
    print(f"  body:      {body_bytes} bytes, signed MPS WorkflowTask callback, distinct TaskId per request")
    print(f"  load:      {shlex.join(load.command(0, args.duration)).replace(':0/', ':PORT/')}")
    print("             (wrk's requests/s only: its latency percentiles are wrong against keep-alive workers)")
    print(f"  probe:     1 keep-alive connection, one request every {args.probe_interval_ms:g} ms "
          "(back-to-back when slower), timed in Python")
    loaded = 2 * (args.warmup + args.rounds * args.duration)
    print(f"  schedule:  warm-up {args.warmup:g}s each, then {args.rounds} rounds x "
          f"{args.duration:g}s per server, receiver first ({loaded:g}s of load in all)")
    print(flush=True)
