"""The callbacks of the pipeline benchmark: rendered by the emulator's code, signed as each product signs, posted."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from bench.pipeline_stack import AMS_SEED, FINISH_AFTER, MPS_KEY, PROCESSING_AFTER, TOKEN, VOD_KEY
from bench.pipeline_tasks import SETUP_THREADS, BenchTask
from emulator import render
from emulator.tasks import FINISH, PROCESSING
from receiver.auth import sign_ams_callback, sign_mps_notification, sign_vod_event

JSON_HEADERS = {"Content-Type": "application/json"}


def callback_body(task: BenchTask, status: str) -> dict[str, Any]:
    """The callback the emulator would send at `status` (before its signature), rendered by the emulator's code.

    Times are fixed per task, so the FINISH body and its retry are the same content.
    """
    created = task.mirror.created_at
    mirror = dataclasses.replace(task.mirror, status=status, began_at=created + PROCESSING_AFTER,
                                 finished_at=created + FINISH_AFTER if status == FINISH else None)
    if task.product == "mps":
        return render.mps_callback(mirror)
    if task.product == "vod":
        return render.vod_callback(mirror)
    return render.ams_callback(mirror)


def signed_callback(task: BenchTask, status: str, now: float) -> tuple[bytes, dict[str, str]]:
    """The body and headers to post, signed as the product signs (`now` picks the MPS/VOD expiry)."""
    body = callback_body(task, status)
    if task.product == "mps":
        return json.dumps(sign_mps_notification(body, MPS_KEY, now=now)).encode(), JSON_HEADERS
    if task.product == "vod":
        return json.dumps(sign_vod_event(body, VOD_KEY, now=now)).encode(), JSON_HEADERS
    return sign_ams_callback(body, AMS_SEED)  # AMS signs the body only: a retry carries the same signature


@dataclass(frozen=True)
class Step:
    """One callback of a task: its name in the report, the status it claims, and the answer expected."""

    name: str
    status: str
    expected: str
    resign_after: float = 0.0  # a retry is signed with a later expiry: a fresh signature


BACKLOG_STEPS = (Step("processing", PROCESSING, "accepted"), Step("finish", FINISH, "accepted"),
                 Step("finish retry", FINISH, "duplicate", resign_after=1.0))
FINISH_ONLY = (Step("finish", FINISH, "accepted"),)


def post_one(session: requests.Session, url: str, task: BenchTask, step: Step) -> str:
    """Post one signed callback; the door's answer as "accepted", "duplicate" or "HTTP <code>"."""
    raw, headers = signed_callback(task, step.status, time.time() + step.resign_after)
    try:
        response = session.post(f"{url}/callbacks/{task.product}", params={"token": TOKEN}, data=raw,
                                headers=headers, timeout=30)
    except requests.RequestException as error:
        return type(error).__name__
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    return str(response.json().get("status"))


def post_callbacks(url: str, tasks: list[BenchTask], steps: tuple[Step, ...] = BACKLOG_STEPS,
                   threads: int = SETUP_THREADS) -> Counter[str]:
    """Every step of every task, each task's steps in order on one thread; answers counted as "<step>: <answer>"."""

    def post_share(share: list[BenchTask]) -> Counter[str]:
        answers: Counter[str] = Counter()
        with requests.Session() as session:
            for task in share:
                for step in steps:
                    answers[f"{step.name}: {post_one(session, url, task, step)}"] += 1
        return answers

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(post_share, [tasks[i::threads] for i in range(threads)]), Counter())


def unexpected_answers(answers: Counter[str], steps: tuple[Step, ...]) -> dict[str, int]:
    expected = {f"{step.name}: {step.expected}" for step in steps}
    return {answer: n for answer, n in answers.items() if answer not in expected}
