"""wrk, the load generator of the intake benchmark: finding (or installing) it, and reading what it printed.

Only its request counts are used: its latency percentiles are wrong against
gunicorn's keep-alive workers (gevent, gthread). Its Lua script
(mps_callbacks.lua) prints "bench-lua:" lines with the answers it saw.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from bench.common import BenchError


def ensure_wrk() -> str:
    """wrk's path; installs it with apt-get when running as root, else exits saying how."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit(
            "bench: wrk is not installed and this is not root; install it "
            "(e.g. `sudo apt-get install wrk`) and run again"
        )
    print("wrk not found; installing it: apt-get update -qq && apt-get install -y -qq wrk", flush=True)
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        if subprocess.run(command, env=apt_env).returncode != 0:
            sys.exit(f"bench: `{' '.join(command)}` failed; install wrk and run again")
    found = shutil.which("wrk")
    if not found:
        sys.exit("bench: wrk is still not on PATH after apt-get install")
    return found


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].split(" Copyright")[0] if lines else "unknown"


@dataclass
class WrkResult:
    requests: int
    requests_per_s: float
    responses: int  # counted by the Lua response hook
    non2xx: int  # wrk's own "Non-2xx or 3xx responses"
    non200: int
    not_accepted: int
    statuses: str
    socket_errors: dict[str, int]
    output: str


def _match_int(pattern: str, text: str, default: int | None = None) -> int:
    found = re.search(pattern, text)
    if found is None:
        if default is None:
            raise BenchError(f"wrk output has no match for {pattern!r}:\n{text}")
        return default
    return int(found.group(1))


def parse_wrk(output: str) -> WrkResult:
    """wrk's counts and our Lua script's "bench-lua:" lines; its latency is ignored on purpose."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    lua = re.search(r"bench-lua: responses=(\d+) non200=(\d+) not_accepted=(\d+) statuses=(\S*)", output)
    errors = re.search(
        r"bench-lua: errors connect=(\d+) read=(\d+) write=(\d+) status=(\d+) timeout=(\d+)", output
    )
    if rps is None or lua is None or errors is None:
        raise BenchError(f"cannot parse wrk's output:\n{output}")
    names = ("connect", "read", "write", "status", "timeout")
    return WrkResult(
        requests=_match_int(r"(\d+) requests in ", output),
        requests_per_s=float(rps.group(1)),
        responses=int(lua.group(1)),
        non2xx=_match_int(r"Non-2xx or 3xx responses:\s+(\d+)", output, default=0),
        non200=int(lua.group(2)),
        not_accepted=int(lua.group(3)),
        statuses=lua.group(4),
        socket_errors={n: int(v) for n, v in zip(names, errors.groups(), strict=True) if n != "status"},
        output=output,
    )
