"""gunicorn settings for `gunicorn app:app` (read from the working directory).

Override any of them on the command line; PORT, WEB_CONCURRENCY,
GUNICORN_WORKER_CLASS and GUNICORN_THREADS are read here.
"""

import os
import sys

from receiver.config import ConfigError, load_settings
from receiver.metrics_dir import share_host_directory

# Fail in the master, once, with the variable's name, before forking workers.
try:
    _settings = load_settings()
except ConfigError as _error:
    sys.exit(f"configuration error: {_error}")

bind = os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Many requests per process let it group-commit the callbacks that arrive together.
# gevent does that with one OS thread, where gthread's threads spend their CPU
# handing the GIL to each other: the same intake answers 1.6-1.9 times as many
# callbacks per second (README, Benchmark). The commit itself still runs on a
# real thread (receiver/blocking.py), so a slow disk never stalls the loop.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
threads = int(os.environ.get("GUNICORN_THREADS", "8"))  # gthread only
keepalive = 5
graceful_timeout = 20
# Several instances share one host (tests, benchmarks, blue/green deploys).
control_socket_disable = True

accesslog = "-"
# %(U)s is the path without the query string: the query carries the URL token.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
# Escapes line breaks and quotes a client puts in the path (receiver/accesslog.py).
logger_class = "receiver.accesslog.AccessLogger"

# Counters shared by the web workers and the deployment's other processes on this host, the worker and the
# sweeper (receiver/metrics.py): named here, before a web worker imports prometheus_client. Never deleted at
# exit: the others go on writing to it, and the counts outlive a restart of the web.
share_host_directory(_settings.inbox_url)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    # Drops a dead worker's live gauges (none today); its counters stay summed.
    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    from receiver.worker import stop_in_web

    stop_in_web(timeout=graceful_timeout)
