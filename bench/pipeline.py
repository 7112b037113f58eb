"""Pipeline benchmark: how fast the worker drains a backlog against the Tencent Cloud emulator, at injected latency.

Run from the project root: ``.venv/bin/python -m bench.pipeline`` (``make bench-pipeline``; ``--help``).

What is measured, and why. SPEC 6 makes the per-action rate limits the target
as well as the bound: while records wait, a host keeps enough Describe calls
in flight to use at least 95% of each action's limit in every second, whatever
the API's latency (0 to 500 ms a call), and never more than the limit. A
serial worker reaches that only when a call costs nothing; at 150 ms it makes
at most ~6 calls a second. This benchmark says where a worker stands:

- **Backlog run**, per latency (0, 50, 150, 500 ms by default): a fresh
  emulator (`python -m emulator`, the API pages' default Describe limits, the
  creating actions' limits raised so set-up is quick), a fresh SQLite inbox
  and the Procfile's `web:` (gunicorn) with `WORKER_IN_WEB=false`. ~667 MPS,
  VOD and AMS tasks are created with the receiver as their NotifyUrl /
  CallbackUrl (so the notify-config check passes) and the
  `emulator:no-callback` marker (so the emulator sends nothing itself), and
  left to finish. The bench then signs each task's callbacks with the
  receiver's own signers and posts them to the door: PROCESSING, FINISH, and
  the FINISH again under a fresh signature (answered `duplicate`): ~2,000
  callbacks, all queued before the Procfile's `worker:` starts. Measured until
  every task's event is in the sink:
  events/s out (first to last forward); per Describe action the share of its
  limit used while its backlog lasted (calls / (limit x seconds from its first
  to its last call)), the busiest one-second window the emulator saw and its
  `RequestLimitExceeded` answers; Describe calls per callback posted (one call
  per task is ideal: 0.33); accept -> forward p50/p99 per accepted callback
  (the inbox's `received_at` to the `forwarded` table's `forwarded_at`, both
  this host's clock); the worker's RSS when it starts and once the backlog is
  done; and every event exactly once in the sink.
- **Idle probe**, per latency, on the same processes once the backlog is done:
  30 callbacks of finished tasks posted one at a time ~200 ms apart, accept ->
  forward p50/p99: what one callback waits when nothing else does.
- **Batch run** (150 ms by default): 200 MPS `BatchTask`s, whose
  `DescribeBatchTaskDetail` is limited to 20/s.
- **SQS run** (150 ms by default): `SINK=sqs` on moto_server behind a small
  counting reverse proxy (moto counts nothing): SQS API calls per event.
- **Soak** (`--soak`, not in the default run): Describe limits raised on both
  sides, latency 0, tasks created in a stream while the worker runs (the
  emulator itself calls back), the worker's RSS at 10% and at 100% of the
  events (10k and 100k by default).

When each action's first and last calls were made comes from the emulator's
call log (`GET /_emulator/calls`) when the emulator has one; otherwise from
polling `GET /_emulator/stats` every 100 ms (each edge is then known to within
one poll: the midpoint is taken, so a span is good to about +-0.1 s).

The run fails (exit 1) when an event is missing or doubled, when the emulator
answered `RequestLimitExceeded` or saw more calls than a limit in one second
(SPEC 6 forbids both), or when the door answered a callback otherwise than
expected. A speed target missed is printed as FAIL but does not fail the run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import bench_main, report_problems
from bench.pipeline_callbacks import BACKLOG_STEPS
from bench.pipeline_report import (
    print_header,
    print_probe_table,
    print_progress,
    print_run_table,
    print_soak,
    print_targets,
    targets,
)
from bench.pipeline_results import RunResult
from bench.pipeline_runs import run_backlog
from bench.pipeline_soak import SoakResult, run_soak
from bench.pipeline_sqs import run_sqs
from bench.pipeline_stack import Setup


def _latencies(text: str) -> list[float]:
    try:
        values = [float(part) / 1000 for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds separated by commas, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("latencies must be non-negative milliseconds")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description=("Measure the worker's throughput against the local Tencent Cloud emulator at injected API "
                     "latency: a queued backlog of signed MPS/VOD/AMS callbacks per latency, an idle probe, a "
                     "BatchTask run, an SQS-sink run on moto_server and (--soak) the worker's memory over many "
                     "events. Exits 1 if an event is lost or doubled or a rate limit is exceeded."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--latencies", type=_latencies, default=_latencies("0,50,150,500"),
                        help="injected API latencies, in ms, one backlog run each")
    parser.add_argument("--callbacks", type=int, default=2000, help="callbacks per backlog run (3 per task)")
    parser.add_argument("--probe-callbacks", type=int, default=30, help="idle-probe callbacks per latency (0: none)")
    parser.add_argument("--skip-batch", action="store_true", help="skip the BatchTask run")
    parser.add_argument("--batch-tasks", type=int, default=200, help="BatchTasks in the batch run")
    parser.add_argument("--batch-latency", type=_latencies, default=_latencies("150"),
                        help="latency (ms) of the batch run")
    parser.add_argument("--batch-all-latencies", action="store_true", help="run the batch run at every --latencies")
    parser.add_argument("--skip-sqs", action="store_true", help="skip the SQS-sink run")
    parser.add_argument("--sqs-events", type=int, default=300, help="events (tasks) in the SQS run")
    parser.add_argument("--sqs-latency", type=_latencies, default=_latencies("150"),
                        help="latency (ms) of the SQS run")
    parser.add_argument("--soak", action="store_true", help="also run the soak (several minutes)")
    parser.add_argument("--soak-events", type=int, default=100_000, help="events in the soak (RSS at each tenth)")
    parser.add_argument("--soak-timeout", type=float, default=3600, help="seconds the soak may take at most")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, inboxes, sinks)")
    args = parser.parse_args(argv)
    if args.callbacks < 3 or args.batch_tasks < 1 or args.sqs_events < 1 or args.soak_events < 10:
        parser.error("--callbacks must be at least 3, --batch-tasks and --sqs-events at least 1, "
                     "--soak-events at least 10")
    return args


@dataclass
class Results:
    """Every run that was made, by kind (an empty list, or None for the soak, when it was not asked for)."""

    backlog: list[RunResult] = field(default_factory=list)
    batch: list[RunResult] = field(default_factory=list)
    sqs: list[RunResult] = field(default_factory=list)
    soak: SoakResult | None = None

    def problems(self) -> list[str]:
        problems = [p for r in self.backlog + self.batch + self.sqs for p in r.problems()]
        soak = self.soak
        if soak is not None and (soak.missing or soak.doubled or soak.unexpected):
            problems.append(f"soak: {soak.missing} missing, {soak.doubled} doubled, {soak.unexpected} unexpected "
                            "events")
        return problems


def run_all(args: argparse.Namespace, setup: Setup) -> Results:
    """Every run the options ask for, one after the other, each on fresh processes; progress as they end."""
    results = Results()
    tasks = max(1, round(args.callbacks / len(BACKLOG_STEPS)))
    for latency in args.latencies:
        print(f"backlog run at {latency * 1000:g} ms: {tasks} tasks, {tasks * len(BACKLOG_STEPS)} callbacks ...",
              flush=True)
        results.backlog.append(run_backlog(setup, "backlog", latency, tasks, ("mps", "vod", "ams"),
                                           args.probe_callbacks))
        print_progress(results.backlog[-1])
    if not args.skip_batch:
        for latency in args.latencies if args.batch_all_latencies else args.batch_latency:
            print(f"batch run at {latency * 1000:g} ms: {args.batch_tasks} BatchTasks ...", flush=True)
            results.batch.append(run_backlog(setup, "batch", latency, args.batch_tasks, ("mps_batch",)))
            print_progress(results.batch[-1])
    if not args.skip_sqs:
        for latency in args.sqs_latency:
            print(f"SQS run at {latency * 1000:g} ms: {args.sqs_events} tasks on moto_server ...", flush=True)
            results.sqs.append(run_sqs(setup, latency, args.sqs_events))
            print_progress(results.sqs[-1])
    if args.soak:
        print(f"soak: {args.soak_events} events ...", flush=True)
        results.soak = run_soak(setup, args.soak_events, args.soak_timeout)
    return results


def print_report(results: Results) -> None:
    print_run_table("Backlog: MPS, VOD and AMS callbacks queued before the worker starts", results.backlog)
    print_probe_table(results.backlog)
    print_run_table("Batch: MPS BatchTask callbacks (DescribeBatchTaskDetail, 20/s)", results.batch)
    print_run_table("SQS sink on moto_server (counting proxy in front)", results.sqs)
    print_soak(results.soak)
    print_targets(targets(results.backlog, results.batch, results.sqs, results.soak))


def run(args: argparse.Namespace, tmp: Path) -> int:
    """Every run the options ask for, the tables and the targets; return the exit status."""
    setup = Setup(tmp)
    print_header(args, setup)
    results = run_all(args, setup)
    print_report(results)
    problems = results.problems()
    if problems:
        return report_problems(problems, "FAILED:", "logs", tmp, args.keep)
    print("\n  checks: every event exactly once in its sink; no RequestLimitExceeded; no one-second window over a "
          "limit; every door answer as expected")
    return 0


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(argv), run, "bench-pipeline-")


if __name__ == "__main__":
    sys.exit(main())
