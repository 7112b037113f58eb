"""When a request reached the emulator's host: the kernel's receive time of its first bytes.

Tencent's gateway counts a call against its limit when the call arrives. The
emulator's threads share two cores with the clients under test, and a thread
may get to a request tens of milliseconds after it came in; stamped then, the
calls that came in during such a stall would count as arriving together, and
a window would read over a limit the client kept. The kernel stamps every
packet as it is received (SO_TIMESTAMPNS), whatever the process is doing, so
the emulator reads its requests through `StampedReads` and counts by that.
"""

from __future__ import annotations

import io
import socket
import struct
import sys
import time

# Linux's values; Python's socket module does not name them.
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@ll")  # struct timespec: tv_sec, tv_nsec
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what `sock` receives; False where it cannot (the reads are then unstamped)."""
    if not sys.platform.startswith("linux") or not _ANCILLARY_BYTES:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


class StampedReads(io.RawIOBase):
    """A socket's reads, remembering the kernel's receive time of the first read since `reset()`."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._stamped = enable(sock)
        self.first_arrival: float | None = None  # time.time() scale

    def reset(self) -> None:
        """A new request begins: its first read sets `first_arrival` (none when its bytes were read before)."""
        self.first_arrival = None

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._sock.fileno()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._stamped:
            return self._sock.recv_into(buffer)
        count, ancillary, _, _ = self._sock.recvmsg_into([buffer], _ANCILLARY_BYTES)
        if self.first_arrival is None:
            self.first_arrival = _stamp_of(ancillary)
        return count


def _stamp_of(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return seconds + nanoseconds / 1e9
    return None


def arrival_or_now(reads: StampedReads | None) -> float:
    """The request's kernel arrival time if known, else now (time.time() scale)."""
    stamp = reads.first_arrival if reads is not None else None
    return time.time() if stamp is None else stamp
