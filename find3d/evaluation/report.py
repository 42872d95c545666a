"""Results container: metrics per task, printed as a markdown table and written as JSON atomically."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from find3d.fileio import atomic_write_json


def _json_number(value: float) -> float | None:
    # JSON has no NaN; an undefined metric is written as null.
    return None if math.isnan(value) else value


@dataclass
class EvalReport:
    """``results[task][metric] = value`` plus free-form ``meta`` (model, checkpoint, dataset, ...)."""

    results: dict[str, dict[str, float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, task: str, metrics: dict[str, float]) -> None:
        self.results.setdefault(task, {}).update({k: float(v) for k, v in metrics.items()})

    def to_markdown(self, digits: int = 2) -> str:
        """One table: a row per task and metric, so tasks with different metrics share it."""
        lines = ["| task | metric | value |", "|---|---|---|"]
        for task, metrics in self.results.items():
            for name, value in metrics.items():
                shown = "n/a" if math.isnan(value) else f"{value:.{digits}f}"
                lines.append(f"| {task} | {name} | {shown} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        results = {t: {k: _json_number(v) for k, v in m.items()} for t, m in self.results.items()}
        return {"meta": self.meta, "results": results}

    def write_json(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())
