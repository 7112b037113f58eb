"""Intake benchmark: the receiver against a bare Flask app, under identical gunicorn settings.

Run from the project root: ``.venv/bin/python -m bench.intake`` (``make bench``).

Why a bare app: an absolute requests/s figure says little on a shared 2-core
machine. Serving the same route from a Flask app that does nothing, under the
same gunicorn settings, on the same machine, in the same minute, isolates what
the intake itself costs (signature, JSON, schema, group-committed SQLite
insert, metrics). Both servers run side by side and are loaded in ALTERNATING
rounds (receiver, bare, receiver, bare, ...), so drift in the machine's speed
hits both alike.

Why wrk plus a probe: wrk (C) generates the load and counts requests
correctly, but its latency percentiles are wrong against gunicorn's keep-alive
workers (gevent, gthread). Latency therefore comes from a probe in this process: one
thread, one keep-alive connection, paced requests timed with perf_counter.

Why distinct, signed callbacks: the receiver answers a repeated task id with a
cheap "duplicate"; every request here (wrk's and the probe's) carries a new
task id and a valid MPS signature, and every answer must be 200 "accepted".
The run fails (exit 1) on any other answer, or when the inbox holds fewer rows
than the requests that were answered "accepted".
"""


from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.common import bench_main, report_problems
from bench.intake_body import NOTIFY_KEY, TASK_ID_PLACEHOLDER, TYPICAL_TASK_ID, build_body_template
from bench.intake_load import Load, Phase, inbox_rows, run_phase
from bench.intake_report import print_header, print_round, print_summary, summarize
from bench.processes import Server, free_port, gunicorn, stop_all
from bench.wrk import ensure_wrk

RECEIVER_APP = "app:app"
BARE_APP = "bench.bare_app:app"

# Variables that would make the two servers differ from what this run says it measures.
_SCRUBBED_ENV = (
    "BIND",
    "GUNICORN_CMD_ARGS",
    "PROMETHEUS_MULTIPROC_DIR",
    "CALLBACK_TOKENS",
    "MPS_ALLOW_UNSIGNED",
    "LOG_LEVEL",
    "WORKER_IN_WEB",
)


def server_env(worker_class: str, workers: int, threads: int, inbox_path: Path) -> dict[str, str]:
    """The one environment both servers get (each adds its own PORT)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(
        GUNICORN_WORKER_CLASS=worker_class,
        WEB_CONCURRENCY=str(workers),
        GUNICORN_THREADS=str(threads),
        INBOX_URL=f"sqlite:///{inbox_path}",
        MPS_NOTIFY_KEYS=NOTIFY_KEY,
    )
    return env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.intake",
        description=(
            "Compare the receiver's intake (POST /callbacks/mps with distinct, signed ~3 KB "
            "MPS callbacks) with a bare Flask app under identical gunicorn settings. Both run "
            "at once on free ports and are loaded with wrk in alternating rounds; a probe "
            "thread measures latency. Exits 1 if any request was not answered 200 \"accepted\" "
            "or the inbox holds fewer rows than accepted requests."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (WEB_CONCURRENCY)")
    parser.add_argument("--worker-class", default="gevent", choices=["gevent", "gthread", "sync"],
                        help="gunicorn worker class (GUNICORN_WORKER_CLASS); gevent is gunicorn.conf.py's default")
    parser.add_argument("--threads", type=int, default=8, help="threads per gthread worker (GUNICORN_THREADS)")
    parser.add_argument("--duration", type=float, default=8, help="seconds of load per server per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (receiver, then bare)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (-c)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (-t)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unreported load per server first")
    parser.add_argument("--probe-interval-ms", type=float, default=5, help="probe pacing")
    parser.add_argument("--startup-timeout", type=float, default=30, help="seconds to wait for /healthz")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, inbox)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.threads < 1 or args.rounds < 1 or args.duration <= 0:
        parser.error("--workers, --threads, --rounds and --duration must be positive")
    if args.connections < args.wrk_threads:
        parser.error("--connections must be at least --wrk-threads")
    return args


def make_load(args: argparse.Namespace, tmp: Path) -> tuple[Load, int]:
    """How both servers are loaded, and the size of one callback in bytes."""
    template = build_body_template()
    template_path = tmp / "body-template.json"
    template_path.write_text(template)
    body_bytes = len(template.replace(TASK_ID_PLACEHOLDER, TYPICAL_TASK_ID).encode())
    load = Load(ensure_wrk(), args.wrk_threads, args.connections, template_path, template,
                args.probe_interval_ms / 1000)
    return load, body_bytes


def run_rounds(args: argparse.Namespace, servers: list[Server], load: Load, inbox: Path) -> list[Phase]:
    """The warm-up, then the alternating rounds, each round's table printed as it ends; the receiver first."""
    receiver = servers[0]
    phases: list[Phase] = []
    if args.warmup > 0:
        for server in servers:
            phases.append(run_phase(server, 0, args.warmup, load, inbox if server is receiver else None))
        rates = ", ".join(f"{p.server} {p.wrk.requests_per_s:.0f} req/s" for p in phases)
        print(f"warm-up done, not reported ({rates})")
    for round_no in range(1, args.rounds + 1):
        this_round = [
            run_phase(server, round_no, args.duration, load, inbox if server is receiver else None)
            for server in servers
        ]
        phases.extend(this_round)
        print(f"\nRound {round_no}/{args.rounds}")
        print_round(this_round)
        sys.stdout.flush()
    return phases


def check(phases: list[Phase], inbox: Path) -> list[str]:
    """Print the inbox's count against the accepted requests; what makes the results untrustworthy."""
    accepted = sum(p.accepted for p in phases if p.server == "receiver")
    rows = inbox_rows(inbox)
    print(f"\n  inbox: {rows} rows; {accepted} receiver requests answered \"accepted\" "
          f"(wrk and probe, warm-up included)")
    problems = [problem for p in phases for problem in p.problems()]
    if rows < accepted:
        problems.append(f"the inbox holds {rows} rows, fewer than the {accepted} accepted requests")
    return problems


def run(args: argparse.Namespace, tmp: Path) -> int:
    """Start both servers, run the alternating rounds, report; return the exit status."""
    load, body_bytes = make_load(args, tmp)
    inbox = tmp / "inbox.db"
    env = server_env(args.worker_class, args.workers, args.threads, inbox)
    servers = [gunicorn("receiver", RECEIVER_APP, free_port(), env, tmp / "receiver.log"),
               gunicorn("bare", BARE_APP, free_port(), env, tmp / "bare.log")]
    print_header(args, load, servers, body_bytes, tmp)
    try:
        for server in servers:
            server.start()
        for server in servers:
            took = server.wait_ready(args.startup_timeout)
            print(f"{server.name} ready on port {server.port} after {took:.2f}s", flush=True)
        phases = run_rounds(args, servers, load, inbox)
    finally:
        stop_all(servers)

    print_summary(summarize(phases))
    problems = check(phases, inbox)
    if problems:
        return report_problems(problems, "FAILED: these results cannot be trusted:", "server logs", tmp, args.keep)
    print("  checks: every request answered 200 \"accepted\"; inbox rows >= accepted requests")
    return 0


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(argv), run, "bench-intake-")


if __name__ == "__main__":
    sys.exit(main())
