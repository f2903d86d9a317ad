"""What a training run leaves for people and programs: a JSON-lines log, a loss-curve PNG
redrawn as the run goes, and the same numbers and grids in the trackers the user asked for."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from emu_cli.training.trackers import StageTrackers

# How often loss.png is redrawn while training: often enough to watch, rare enough that
# drawing (about 0.2 s) costs nothing next to the steps.
PLOT_EVERY_SECONDS = 30.0


class TrainingLog:
    def __init__(
        self, folder: Path, enabled: bool = True, trackers: StageTrackers | None = None
    ) -> None:
        self.path = folder / "log.jsonl"
        self.plot_path = folder / "loss.png"
        self.enabled = enabled
        self.trackers = trackers
        self.plotted = time.monotonic()
        if enabled:
            folder.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.trackers is not None and "step" in record:
                self.trackers.scalars(record["step"], record)

    def image(self, step: int, name: str, path: Path) -> None:
        """A grid the run wrote, for the trackers (the PNG itself is the file's record)."""
        if self.enabled and self.trackers is not None:
            self.trackers.image(step, name, path)

    def plot_if_due(self) -> None:
        if time.monotonic() - self.plotted >= PLOT_EVERY_SECONDS:
            self.plot()

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """On resume, drop what the killed run logged after its last checkpoint."""
        if self.enabled and self.path.is_file():
            kept = [r for r in self.records() if r.get("step", 0) <= step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def plot(self) -> None:
        if not self.enabled:
            return
        self.plotted = time.monotonic()
        points = [(r["step"], r["loss"]) for r in self.records() if "loss" in r]
        if not points:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps, losses = zip(*points, strict=True)
        figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
        axis.plot(steps, losses, linewidth=0.8, alpha=0.4, label="loss")
        window = max(1, len(losses) // 20)
        if window > 1:
            smooth = [
                sum(losses[max(0, i - window + 1) : i + 1])
                / len(losses[max(0, i - window + 1) : i + 1])
                for i in range(len(losses))
            ]
            axis.plot(steps, smooth, linewidth=1.5, label=f"mean of {window}")
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.set_yscale("log" if min(losses) > 0 else "linear")
        axis.legend()
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(self.plot_path)
        plt.close(figure)
