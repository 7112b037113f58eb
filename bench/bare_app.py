"""The baseline of the intake benchmark: Flask under the same gunicorn, doing nothing.

``gunicorn -c gunicorn.conf.py bench.bare_app:app`` answers the callback route
exactly as the receiver does on success, without reading, checking or storing
anything. What the receiver costs beyond this is the cost of the intake itself
(authentication, validation, the durable inbox), not of Flask or gunicorn.
"""

from __future__ import annotations

from flask import Flask

app = Flask("bare")


@app.post("/callbacks/mps")
def accept_callback() -> dict[str, str]:
    """Answer 200 "accepted" without touching the body."""
    return {"status": "accepted"}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    """The same readiness check as the receiver's, so both servers start the same way."""
    return {"status": "ok"}
