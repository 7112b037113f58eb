"""A local emulator of the Tencent Cloud API 3.0 actions the receiver touches.

Run it with ``python -m emulator --port 9000`` (see ``--help``). It lets people
try the receiver without a Tencent Cloud account and lets the tests drive the
official SDK clients and real, signed callbacks over real sockets.
"""
