"""The real payloads Tencent Cloud publishes (../shared/realworld/), and the answer each gets (docs/realworld.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from receiver import auth
from tests.client import post_mps, post_raw, post_vod
from tests.conftest import AMS_SEED, TOKENS

# A copy of ../shared/realworld/ (test_realworld checks that it has not drifted, where that folder is).
REALWORLD = Path(__file__).resolve().parent / "fixtures" / "realworld"
SHARED_REALWORLD = Path(__file__).resolve().parents[2] / "shared" / "realworld"
DOCS_TABLE = Path(__file__).resolve().parents[1] / "docs" / "realworld.md"


@dataclass(frozen=True)
class RealPayload:
    name: str
    product: str
    kind: str
    action: str
    body: Any
    raw_body: str | None


def load(name: str) -> RealPayload:
    data = json.loads((REALWORLD / name).read_text())
    return RealPayload(name, data["product"], data["kind"], data["action"], data["body"], data.get("raw_body"))


def all_payloads(kind: str | None = None) -> list[RealPayload]:
    found = [load(path.name) for path in sorted(REALWORLD.glob("*.json"))]
    return [payload for payload in found if kind is None or payload.kind == kind]


def post_signed(base_url: str, payload: RealPayload, body: Any = None) -> requests.Response:
    """Post a callback the way Tencent Cloud would, signed with our signers (AMS: over its exact bytes)."""
    body = payload.body if body is None else body
    if payload.product == "mps":
        return post_mps(base_url, body)
    if payload.product == "vod":
        return post_vod(base_url, body)
    raw = payload.raw_body.encode() if payload.raw_body is not None and body is payload.body else \
        json.dumps(body, ensure_ascii=False).encode()
    return post_raw(base_url, "ams", raw, TOKENS[0], {"X-Signature": auth.ams_signature(raw, AMS_SEED)})


# What the door answers each callback of ../shared/realworld/ (the table of docs/realworld.md).
DOOR_ANSWERS: dict[str, tuple[int, str]] = {
    "ams_cb_describetaskdetail_shape_2021.json": (200, "accepted"),
    "ams_cb_describetaskdetail_shape_2024.json": (200, "accepted"),
    "ams_cb_signature_example.json": (200, "accepted"),
    "mps_cb_livestream_aireviewresult.json": (200, "accepted"),
    "mps_cb_workflowtask_parsenotification_2020.json": (200, "accepted"),
    "mps_cb_workflowtask_parsenotification_2025.json": (200, "accepted"),
    "vod_cb_editmediacomplete_pullevents_2023.json": (200, "accepted"),
    "vod_cb_newfileupload_pullevents_2023.json": (200, "accepted"),
    "vod_cb_procedurestatechanged_pullevents_2025.json": (200, "accepted"),
    "vod_cb_procedurestatechanged_v2procedure_pullevents_2023.json": (200, "accepted"),
}
