"""What one sweep found, per product and in all: the `--once` JSON and the health detail."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ProductReport:
    examined: int = 0  # finished tasks listed
    forwarded: int = 0  # their final event known forwarded already: skipped
    missing: int = 0  # enqueued: never called back (or not yet)
    pages: int = 0
    error: str | None = None


@dataclass
class SweepReport:
    started_at: float
    seconds: float = 0.0
    products: dict[str, ProductReport] = field(default_factory=dict)

    @property
    def examined(self) -> int:
        return sum(p.examined for p in self.products.values())

    @property
    def missing(self) -> int:
        return sum(p.missing for p in self.products.values())

    @property
    def ok(self) -> bool:
        return all(p.error is None for p in self.products.values())

    def as_dict(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "seconds": round(self.seconds, 3), "examined": self.examined,
                "missing": self.missing, "products": {k: asdict(v) for k, v in self.products.items()}}
