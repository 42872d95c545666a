"""Loss curves of a run as a PNG (``OUTPUT/loss_curves.png``), redrawn at every checkpoint."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from find3d.fileio import atomic_open


def plot_loss_curves(run_dir: Path, out: Path | None = None) -> Path:
    """Plot the total loss and each task's summed terms from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    steps = [row["step"] for row in rows]
    per_task: dict[str, list[float]] = defaultdict(lambda: [float("nan")] * len(rows))
    for i, row in enumerate(rows):
        for key, value in row.items():
            if "." in key:  # "task.term": sum a task's weighted terms
                task = key.split(".")[0]
                current = per_task[task][i]
                per_task[task][i] = value if current != current else current + value
    fig, (total, tasks) = plt.subplots(1, 2, figsize=(12, 4.5))
    losses = [row["loss"] for row in rows]
    total.plot(steps, losses, color="black", alpha=0.25)
    total.plot(steps, _smooth(losses), color="black")
    total.set(title="total loss (all tasks, all layers)", xlabel="step", yscale="log")
    for task, values in sorted(per_task.items()):
        tasks.plot(steps, _smooth(values), label=task)
    tasks.set(title="final-layer loss per task (smoothed)", xlabel="step", yscale="log")
    tasks.legend(fontsize=8)
    for axis in (total, tasks):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    out = out or run_dir / "loss_curves.png"
    with atomic_open(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return out


def _smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average, as TensorBoard's smoothing slider (single batches are noisy)."""
    out, running = [], None
    for value in values:
        if value == value:  # skip NaN (task absent from that step's batch)
            running = value if running is None else weight * running + (1 - weight) * value
        out.append(running if running is not None else float("nan"))
    return out
