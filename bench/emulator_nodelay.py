"""``python -m emulator``, but with TCP_NODELAY on its connections; for bench/pipeline.py.

`emulator/server.py` answers with two writes (headers, then body) on a
keep-alive connection with Nagle's algorithm on: the body waits for the ACK of
the headers, which the SDK client delays, so every API call takes ~40 ms more
than the injected latency (measured: 44 ms per DescribeTaskDetail at latency
0, 1.3 ms with TCP_NODELAY). Until the emulator sets it itself, the benchmark
starts it through this module, which changes nothing else.
"""

from __future__ import annotations

import sys

from emulator.__main__ import main
from emulator.server import Handler

Handler.disable_nagle_algorithm = True

if __name__ == "__main__":
    sys.exit(main())
