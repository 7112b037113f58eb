"""What both benchmarks share besides their processes: the error that stops a run, the run's frame, the header."""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


class BenchError(Exception):
    """The benchmark cannot go on (a server died, wrk failed); the message says why."""


class BenchTimeout(BenchError):
    """Something awaited did not come in time."""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def filesystem_of(path: Path) -> str:
    """The filesystem type holding `path`: fsync costs differ wildly (tmpfs vs disk)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                mount_point = parts[1]
                inside = str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, kind = mount_point, parts[2]
    except OSError:
        pass
    return kind


def print_command_and_machine(module: str) -> None:
    """The header's first lines: how this run was started, and on what."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"  command:   {shlex.quote(sys.executable)} -m {module} {shlex.join(sys.argv[1:])}".rstrip())
    print(f"  machine:   nproc={affinity} ({platform.machine()}, {platform.platform()}), "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def bench_main(args: argparse.Namespace, run: Callable[[argparse.Namespace, Path], int], prefix: str) -> int:
    """Run a benchmark in a temporary directory (kept with --keep); a SIGTERM still cleans up."""
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        status = run(args, tmp)
    except BenchError as error:
        print(f"\nbench: {error}", file=sys.stderr)
        status = 2
    finally:
        if args.keep:
            print(f"  kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"  wall time: {time.monotonic() - started:.1f}s")
    return status


def report_problems(problems: list[str], heading: str, logs: str, tmp: Path, keep: bool) -> int:
    """Print on stderr what makes the run untrustworthy, and where its logs are; the exit status (0 or 1)."""
    if not problems:
        return 0
    print(f"\n{heading}", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    print(f"  {logs}: {tmp}" + ("" if keep else " (rerun with --keep to keep them)"), file=sys.stderr)
    return 1
