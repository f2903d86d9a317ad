"""Early stopping for quality-tuning, which the paper did by hand ("stopped early on purpose
although the loss was still falling"): generated images are judged every few steps, the best
checkpoint is kept, and training stops when appeal stops rising or faithfulness falls. Pre-training
records the same curve under :class:`CurveOnly`, which never stops or picks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar


@dataclass
class ValidationPoint:
    step: int
    appeal: float
    faithfulness: float


@dataclass
class Decision:
    best: bool  # this point is the best so far: keep its weights
    stop: bool
    reason: str = ""


@dataclass
class EarlyStopping:
    """The rule, over a curve of (step, appeal, faithfulness) points; the first point is the
    starting model's.

    A point's appeal is read as the mean of its own and the ``window - 1`` readings before it.
    A point can be the best only if its faithfulness is within ``faithfulness_margin`` of the
    start's; the best is the one with the highest (mean) appeal. Training stops after
    ``patience`` points in a row without an appeal gain above ``min_delta`` over the best, or
    when faithfulness is more than ``faithfulness_margin`` below the start's at
    ``fall_confirmations`` points in a row.

    One high reading is not enough to be the best: the judged appeal of a small validation set
    is noisy, and the mean of ``window`` readings picks a step the panel prefers where a single
    high reading does not (docs/benchmarks.md, "How noisy one early-stopping validation
    reading is"; the masked demo's curve is in tests/test_quality_tune.py).

    One low point is not enough to stop: the judged faithfulness of a small validation set is
    noisy too, and one low reading once stopped the masked demo at its untuned weights
    (docs/results.md).
    """

    patience: int = 3
    min_delta: float = 0.0
    faithfulness_margin: float = 0.1
    fall_confirmations: int = 2
    window: int = 2
    points: list[ValidationPoint] = field(default_factory=list)
    best_step: int | None = None
    stale: int = 0
    falling: int = 0  # points in a row below the faithfulness margin

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

    def update(self, step: int, appeal: float, faithfulness: float) -> Decision:
        point = ValidationPoint(step, float(appeal), float(faithfulness))
        self.points.append(point)
        if len(self.points) == 1:
            self.best_step = step
            return Decision(best=True, stop=False)
        start = self.points[0]
        faithful = point.faithfulness >= start.faithfulness - self.faithfulness_margin
        self.falling = 0 if faithful else self.falling + 1
        if self.falling >= self.fall_confirmations:
            return Decision(
                best=False,
                stop=True,
                reason=f"faithfulness fell from {start.faithfulness:.3f} to "
                f"{point.faithfulness:.3f} (margin {self.faithfulness_margin}, "
                f"{self.falling} validations in a row)",
            )
        best = self.best
        if faithful and self.mean_appeal(point) > self.mean_appeal(best) + self.min_delta:
            self.best_step, self.stale = step, 0
            return Decision(best=True, stop=False)
        self.stale += 1
        if self.stale >= self.patience:
            over = f", mean of {self.window} readings" if self.window > 1 else ""
            return Decision(
                best=False,
                stop=True,
                reason=f"appeal did not rise above {self.mean_appeal(best):.3f} (step "
                f"{best.step}{over}) in {self.patience} validations",
            )
        return Decision(best=False, stop=False)

    @property
    def best(self) -> ValidationPoint:
        return next(p for p in self.points if p.step == self.best_step)

    def mean_appeal(self, point: ValidationPoint) -> float:
        """The mean appeal of ``point`` and the ``window - 1`` readings before it."""
        at = self.points.index(point)
        recent = self.points[max(0, at - self.window + 1) : at + 1]
        return sum(p.appeal for p in recent) / len(recent)

    def restore(self, points: list[ValidationPoint]) -> None:
        """Replay a curve recorded before a crash, so a resumed run decides as this one would."""
        self.points, self.best_step, self.stale, self.falling = [], None, 0, 0
        for point in points:
            self.update(point.step, point.appeal, point.faithfulness)

    def to_dict(self) -> dict:
        return {
            "patience": self.patience,
            "min_delta": self.min_delta,
            "faithfulness_margin": self.faithfulness_margin,
            "fall_confirmations": self.fall_confirmations,
            "window": self.window,
            "best_step": self.best_step,
            "points": [asdict(p) for p in self.points],
        }


@dataclass
class CurveOnly:
    """The rule of a run that is watched, not stopped: pre-training records how its judged
    appeal and faithfulness grow, and its result is the last step, not a chosen one."""

    points: list[ValidationPoint] = field(default_factory=list)
    best_step: ClassVar[None] = None  # no step is chosen

    def update(self, step: int, appeal: float, faithfulness: float) -> Decision:
        self.points.append(ValidationPoint(step, float(appeal), float(faithfulness)))
        return Decision(best=False, stop=False)

    def restore(self, points: list[ValidationPoint]) -> None:
        self.points = list(points)

    def to_dict(self) -> dict:
        return {"best_step": None, "points": [asdict(p) for p in self.points]}


def read_curve(path: Path, up_to_step: int) -> list[ValidationPoint]:
    if not path.is_file():
        return []
    points = [ValidationPoint(**p) for p in json.loads(path.read_text())["points"]]
    return [p for p in points if p.step <= up_to_step]
