"""The emulator counts a call when it arrived, as Tencent's gateway does, not when one of its threads got to it."""

from __future__ import annotations

import io
import socket
import sys
import threading
import time

import pytest

from emulator.arrival import StampedReads
from emulator.ratelimit import RateLimiter

KEY = ("mps", "DescribeTaskDetail")
STALL_SECONDS = 0.3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel receive stamps are read on Linux")
def test_a_request_read_late_is_stamped_when_it_arrived():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    connection, _ = server.accept()
    try:
        reads = StampedReads(connection)
        stream = io.BufferedReader(reads)
        ready = threading.Event()

        def send_later() -> None:
            ready.wait(5)
            client.sendall(b"POST / HTTP/1.1\r\n")

        sender = threading.Thread(target=send_later)
        sender.start()
        reads.reset()
        sent_after = time.time()
        ready.set()
        sender.join(5)
        time.sleep(STALL_SECONDS)  # the emulator's thread gets to the request late (the stall under test)
        read_at = time.time()
        assert stream.readline() == b"POST / HTTP/1.1\r\n"
        assert reads.first_arrival is not None
        assert sent_after <= reads.first_arrival <= read_at - STALL_SECONDS / 2

        reads.reset()  # the next request's first read stamps again; one already buffered is not stamped
        client.sendall(b"GET / HTTP/1.1\r\n")
        assert stream.readline() == b"GET / HTTP/1.1\r\n" and reads.first_arrival > read_at
    finally:
        for sock in (client, connection, server):
            sock.close()


def test_calls_counted_out_of_arrival_order_are_windowed_by_arrival():
    limiter = RateLimiter({KEY: 3})
    # Counted in this order by the threads; they arrived 0.0, 0.5, 0.9, then 1.2 - and 0.6, counted last.
    assert [limiter.admit(KEY, at) for at in (100.0, 100.5, 100.9, 101.2)] == [True] * 4
    # (99.9, 100.9] already holds three admitted calls (0.0, 0.5, 0.9): one at 0.6 would make it four.
    assert limiter.admit(KEY, 100.6) is False
    limiter.count_call(KEY, 100.6)
    for at in (100.0, 100.5, 100.9, 101.2):
        limiter.count_call(KEY, at)
    stats = limiter.snapshot()["mps.DescribeTaskDetail"]
    assert stats["max_1s_window"] == 3
    assert stats["max_1s_window_attempted"] == 4  # (100.2, 101.2] holds 0.5, 0.6, 0.9 and 1.2


def test_a_window_is_the_one_second_up_to_an_arrival_inclusive():
    limiter = RateLimiter({KEY: 2})
    assert limiter.admit(KEY, 10.0) and limiter.admit(KEY, 10.4)
    assert not limiter.admit(KEY, 10.999)
    assert limiter.admit(KEY, 11.0)  # 10.0 is a full second before: out of the window ending at 11.0
    assert limiter.snapshot()["mps.DescribeTaskDetail"]["max_1s_window"] == 2
