"""One log format for every process of the product."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging() -> None:
    """Log to stderr at LOG_LEVEL (default INFO); idempotent."""
    root = logging.getLogger()
    if getattr(root, "_receiver_configured", False):
        return
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), format=FORMAT)
    root._receiver_configured = True  # type: ignore[attr-defined]
