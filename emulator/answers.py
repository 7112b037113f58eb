"""Installed answers: a Describe answer given once and then served as is for one task id.

Real answers hold fields the emulator's own tasks never have (results, metadata, sub-tasks); installing the
answers Tencent Cloud publishes lets the receiver be tested against exactly those. An installed answer is
keyed by ``(service, action, TaskId request parameter)`` and replaces the action's own handler for that
task id only, after the usual admission, latency and faults.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.errors import request_id

# Answers that list many tasks carry no single task to key them by; --answers leaves them to the route, as it
# leaves the answers of non-Describe actions (a ProcessImage answer's TaskId is the task it started).
LIST_ACTIONS = ("DescribeTasks",)


@dataclass(frozen=True)
class Answer:
    service: str
    action: str
    task_id: str
    response: dict[str, Any]

    def key(self) -> tuple[str, str, str]:
        return self.service, self.action, self.task_id

    def describe(self) -> dict[str, str]:
        return {"service": self.service, "action": self.action, "task_id": self.task_id}


def parse_answer(body: Any, served: Iterable[tuple[str, str]]) -> Answer:
    """The route's body checked; `served` is the (service, action) pairs the emulator answers. ValueError if bad."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    for name in ("service", "action", "task_id"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise ValueError(f"`{name}` must be a non-empty string")
    if not isinstance(body.get("response"), dict):
        raise ValueError("`response` must be the answer's Response object")
    unknown = set(body) - {"service", "action", "task_id", "response"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    if (body["service"], body["action"]) not in set(served):
        raise ValueError(f"the emulator does not serve {body['service']}.{body['action']}")
    return Answer(body["service"], body["action"], body["task_id"], copy.deepcopy(body["response"]))


def task_id_of(response: dict[str, Any]) -> str | None:
    """The task a Describe answer is about: its top-level TaskId, else its task object's (WorkflowTask, ...)."""
    if isinstance(response.get("TaskId"), str) and response["TaskId"]:
        return response["TaskId"]
    for value in response.values():
        if isinstance(value, dict) and isinstance(value.get("TaskId"), str) and value["TaskId"]:
            return value["TaskId"]
    return None


def load_directory(directory: Path, served: Iterable[tuple[str, str]]) -> list[Answer]:
    """The ``kind: describe`` files of a realworld-format directory that name their task; the others skipped."""
    served = set(served)
    answers = []
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text())
        if not isinstance(document, dict) or document.get("kind") != "describe":
            continue
        service, action, body = document.get("product"), document.get("action"), document.get("body")
        if not isinstance(body, dict) or action in LIST_ACTIONS or not str(action).startswith("Describe"):
            continue
        response = body.get("Response", body)
        task_id = task_id_of(response) if isinstance(response, dict) else None
        if task_id is not None and (service, action) in served:
            answers.append(Answer(service, action, task_id, response))
    return answers


def served_as_is(response: dict[str, Any]) -> dict[str, Any]:
    """The envelope of an installed answer: every key kept in place, only RequestId new, as each real call's is."""
    answer = {key: (request_id() if key == "RequestId" else value) for key, value in copy.deepcopy(response).items()}
    answer.setdefault("RequestId", request_id())
    return {"Response": answer}


class AnswerStore:
    """The installed answers; `reset` returns to the start-up ones (``--answers``), like faults to their flags."""

    def __init__(self, initial: Iterable[Answer] = ()) -> None:
        self._initial = {a.key(): a for a in initial}
        self._answers = dict(self._initial)
        self._lock = threading.Lock()

    def install(self, answer: Answer) -> None:
        with self._lock:
            self._answers[answer.key()] = answer

    def get(self, service: str, action: str, task_id: Any) -> Answer | None:
        if not isinstance(task_id, str):
            return None
        with self._lock:
            return self._answers.get((service, action, task_id))

    def reset(self) -> None:
        with self._lock:
            self._answers = dict(self._initial)
