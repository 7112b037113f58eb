"""WSGI entry point: ``gunicorn app:app`` (settings in gunicorn.conf.py)."""

from __future__ import annotations

import logging
import sys

from flask import Flask

from receiver.config import ConfigError, load_settings
from receiver.http import create_app
from receiver.inbox import open_inbox
from receiver.logs import configure_logging
from receiver.worker import start_in_web

# gunicorn's exit code for "the application could not be loaded": it stops
# instead of restarting the worker forever.
APP_LOAD_ERROR = 4


def build_app() -> Flask:
    """Read the configuration once and build the application, or stop with a clear message."""
    configure_logging()
    try:
        settings = load_settings()
        inbox = open_inbox(settings)
    except ConfigError as error:
        logging.getLogger("receiver").critical("configuration error: %s", error)
        sys.exit(APP_LOAD_ERROR)
    if settings.worker_in_web:
        start_in_web(settings, inbox)
    return create_app(settings, inbox)


app = build_app()
