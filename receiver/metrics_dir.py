"""Where every process of one deployment on a host keeps its Prometheus figures (see receiver/metrics.py).

prometheus_client chooses between in-memory and file-backed values when it
is first imported, from ``PROMETHEUS_MULTIPROC_DIR``; so this module imports
nothing of it, and the directory is named before: in gunicorn.conf.py for
the web processes, at the top of receiver/metrics.py for the others (the
worker and the sweeper import it through receiver.tencentcloud and
receiver.worker.forwarding before anything else could import
prometheus_client).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile

from receiver.config import ConfigError, load_settings

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
# The directory this module named last, so that a child that inherits the environment but serves another
# inbox (a test's processes, a second deployment started from this one) derives its own instead of taking
# it for the operator's choice.
DERIVED_ENV = "RECEIVER_METRICS_DIR_DERIVED"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def host_directory(inbox_url: str) -> str:
    """The metrics directory of the deployment whose inbox is `inbox_url`, on this host, since its last boot.

    One per inbox: processes sharing an inbox are one deployment, whatever else differs. A SQLite
    inbox is keyed by its file's real path (a relative INBOX_URL names the same file from each
    process's directory). The boot id is in the key so that a reboot starts the counters afresh
    even where the temporary directory survives it.
    """
    key = inbox_url
    if inbox_url.startswith("sqlite:///"):
        key = "sqlite:///" + os.path.realpath(inbox_url[len("sqlite:///"):])
    material = f"{_boot_id()}\n{key}".encode()
    path = os.path.join(tempfile.gettempdir(), f"tc-receiver-metrics-{hashlib.sha256(material).hexdigest()[:16]}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _boot_id() -> str:
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as file:
            return file.read().strip()
    except OSError:  # not Linux, or no /proc: the temporary directory's own life has to do
        return ""


def share_host_directory(inbox_url: str | None = None) -> str | None:
    """Name this process's metrics directory (``PROMETHEUS_MULTIPROC_DIR``) before prometheus_client is imported.

    An operator's PROMETHEUS_MULTIPROC_DIR is kept; otherwise the deployment's `host_directory`, of
    `inbox_url` or of the configured INBOX_URL. None when there is none to name: a configuration that
    does not load (the process refuses to start with its own error), or prometheus_client already
    imported without one.
    """
    current = os.environ.get(ENV)
    if current and current != os.environ.get(DERIVED_ENV):
        return current
    if "prometheus_client.values" in sys.modules:
        # Its mode is chosen: a directory named now would be read at a scrape but never written.
        if not current:
            log.warning("prometheus_client was imported before the metrics directory was named: "
                        "this process's figures stay in memory")
        return current or None
    if inbox_url is None:
        try:
            inbox_url = load_settings().inbox_url
        except ConfigError:
            return None
    path = host_directory(inbox_url)
    os.environ[ENV] = os.environ[DERIVED_ENV] = path
    return path
