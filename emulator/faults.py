"""Runtime fault injection, set by flags at start-up and changed at ``POST /_emulator/faults``.

Probabilities are in [0, 1]; 1 makes a fault deterministic, which is what the tests use.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class Faults:
    """The current faults. Every field is documented in ``emulator/README.md``."""

    latency: float = 0.0  # seconds added before every API answer
    error_rate: float = 0.0  # probability of an InternalError answer
    force_rate_limit: bool = False  # every API call answers RequestLimitExceeded
    callback_drop: float = 0.0  # probability a callback is never sent
    callback_duplicate: float = 0.0  # probability a callback is sent twice
    callback_reorder: bool = False  # a task's callbacks are held and sent newest first when it finishes
    callback_delay: float = 0.0  # seconds to wait before sending each callback
    never_callback: bool = False  # tasks created while set never call back
    batch_callback_without_task_id: bool = False  # BatchTask callbacks leave out the TaskId
    # Id form of the ProcessImage tasks started meanwhile: "token" (64 characters, as ProcessImage's example
    # answers) or "workflow" (<appid>-WorkflowTask-<hex>, as DescribeImageTaskDetail's examples query).
    image_task_ids: str = "token"


# The values a string setting may take.
CHOICES: dict[str, tuple[str, ...]] = {"image_task_ids": ("token", "workflow")}


class FaultState:
    """Thread-safe holder of the current `Faults`."""

    def __init__(self, initial: Faults | None = None) -> None:
        self._initial = initial or Faults()
        self._faults = Faults(**asdict(self._initial))
        self._lock = threading.Lock()
        self._random = random.Random()

    def current(self) -> Faults:
        with self._lock:
            return Faults(**asdict(self._faults))

    def update(self, changes: dict[str, Any]) -> Faults:
        """Apply a partial update; unknown names or wrong types raise ValueError."""
        known = {f.name: f for f in fields(Faults)}
        with self._lock:
            updated = asdict(self._faults)
            for name, value in changes.items():
                if name not in known:
                    raise ValueError(f"unknown fault {name!r}")
                kind = type(getattr(Faults(), name))
                if kind is bool and not isinstance(value, bool):
                    raise ValueError(f"fault {name!r} must be a boolean")
                if kind is float and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                    raise ValueError(f"fault {name!r} must be a non-negative number")
                if kind is str and value not in CHOICES[name]:
                    raise ValueError(f"fault {name!r} must be one of {list(CHOICES[name])}")
                updated[name] = kind(value)
            self._faults = Faults(**updated)
            return Faults(**updated)

    def reset(self) -> None:
        with self._lock:
            self._faults = Faults(**asdict(self._initial))

    def roll(self, probability: float) -> bool:
        """True with `probability`."""
        if probability <= 0:
            return False
        with self._lock:
            return self._random.random() < probability
