"""Sending callbacks the way Tencent Cloud does, signed with the product's own signers."""

from __future__ import annotations

import json
from typing import Any

import requests

from receiver import auth
from tests.conftest import AMS_SEED, MPS_KEYS, TOKENS, VOD_KEY


def post_raw(base_url: str, source: str, data: bytes, token: str | None = TOKENS[0],
             headers: dict[str, str] | None = None) -> requests.Response:
    params = {"token": token} if token is not None else None
    return requests.post(
        f"{base_url}/callbacks/{source}", data=data, params=params,
        headers={"Content-Type": "application/json", **(headers or {})}, timeout=30,
    )


def post_mps(base_url: str, body: dict[str, Any], key: str = MPS_KEYS[0], now: float | None = None,
             token: str | None = TOKENS[0]) -> requests.Response:
    signed = auth.sign_mps_notification(body, key, now=now)
    return post_raw(base_url, "mps", json.dumps(signed).encode(), token)


def post_vod(base_url: str, body: dict[str, Any], key: str = VOD_KEY, now: float | None = None,
             token: str | None = TOKENS[0]) -> requests.Response:
    signed = auth.sign_vod_event(body, key, now=now)
    return post_raw(base_url, "vod", json.dumps(signed).encode(), token)


def post_ams(base_url: str, body: dict[str, Any], seed: str = AMS_SEED,
             token: str | None = TOKENS[0]) -> requests.Response:
    raw, headers = auth.sign_ams_callback(body, seed)
    return post_raw(base_url, "ams", raw, token, headers)
