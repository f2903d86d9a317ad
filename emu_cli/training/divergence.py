"""Divergence: which checkpoints a blown-up run keeps, and how it may be resumed.

A learning rate far too high blows the weights up a step or more before the loss turns NaN,
and the checkpoints written in between hold the blown-up weights. So the trainer watches the
loss (:class:`LossGuard`): a step whose loss exceeds ``loss_spike_factor`` times the recent
level starts a spike, and no checkpoint is written until the loss settles. When the loss or
the gradient norm turns non-finite, :func:`record_divergence` sets aside every checkpoint from
the step before the spike began (a checkpoint at step N holds the weights whose loss step N+1
logs) and writes ``diverged.json`` in the stage folder. A resume of a diverged stage may then
change the settings that cause divergence (:data:`AFTER_DIVERGENCE`); the change is recorded
in the provenance (``resumed_with_changes``). docs/reliability.md, "Divergence".
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu_cli.checkpoint import state as checkpoints
from emu_cli.files import write_atomic

DIVERGED = "diverged.json"
SET_ASIDE_PREFIX = "diverged-"
# what a diverged stage may be resumed with changed: the step size and its guards
AFTER_DIVERGENCE = ("learning_rate", "warmup_steps", "max_grad_norm")
WINDOW = 50  # the recent losses a spike is measured against
SETTLE_STEPS = 5  # healthy steps in a row after a spike before checkpoints are written again


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class LossGuard:
    """Watches each step's loss. A spike is a loss above ``factor`` times the median of the
    recent healthy ones; the loss has settled again after :data:`SETTLE_STEPS` healthy steps in
    a row, and :attr:`unsettled_since` is the first spike it has not settled from. Losses that
    stay high for :data:`WINDOW` steps become the new level (a false alarm must not stop
    checkpoints for the rest of a long run)."""

    factor: float  # 0: no spike guard (non-finite losses still stop the stage)
    recent: list[float] = field(default_factory=list)  # the healthy losses of late
    unsettled: list[float] = field(default_factory=list)  # every loss since the first spike
    unsettled_since: int | None = None
    calm: int = 0  # healthy steps in a row since the last spike

    def observe(self, step: int, loss: float) -> str | None:
        """Record ``step``'s finite ``loss``; a note when the loss spikes or a spike is taken
        as the new level."""
        note = None
        level = statistics.median(self.recent) if self.recent else math.inf
        if self.factor > 0 and loss > self.factor * level:
            self.calm = 0
            if self.unsettled_since is None:
                self.unsettled_since = step
                note = (
                    f"the loss spiked at step {step}: {loss:.4g}, {loss / level:.3g}x its "
                    f"recent level {level:.4g}; no checkpoint is written until it settles"
                )
        else:
            self.recent = [*self.recent, loss][-WINDOW:]
            self.calm += 1
            if self.calm >= SETTLE_STEPS:
                self.unsettled, self.unsettled_since = [], None
        if self.unsettled_since is None:
            return note
        self.unsettled.append(loss)
        if len(self.unsettled) < WINDOW:
            return note
        since, self.recent = self.unsettled_since, self.unsettled[-WINDOW:]
        self.unsettled, self.unsettled_since, self.calm = [], None, 0
        return (
            f"the loss has not settled since step {since}: its level since then is taken as "
            "the new one, and checkpoints are written again. If the run diverged, resume from "
            "a checkpoint before that step with a lower learning rate"
        )

    @property
    def settled(self) -> bool:
        return self.unsettled_since is None

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed run measures spikes as the killed one did."""
        return {"recent": self.recent, "calm": self.calm}

    def restore(self, state: dict[str, Any]) -> None:
        """Checkpoints are written only while the loss is settled: nothing unsettled to keep."""
        self.recent = list(state.get("recent", []))
        self.calm = int(state.get("calm", 0))


def record_divergence(
    stage_folder: Path, stage: str, step: int, what: str, value: float, guard: LossGuard
) -> str:
    """Set aside the checkpoints that may hold blown-up weights, write ``diverged.json`` and
    return the message that stops the run. ``step`` is the step (as the log counts) whose
    ``what`` (loss or gradient norm) became ``value``."""
    bad_from = guard.unsettled_since or step  # the first step whose loss was bad
    folder = stage_folder / "checkpoints"
    set_aside = []
    for path in sorted(folder.glob("step-*")) if folder.is_dir() else []:
        if checkpoints.checkpoint_step(path) >= bad_from - 1:
            path.rename(path.with_name(SET_ASIDE_PREFIX + path.name))
            set_aside.append(path.name)
    good = checkpoints.latest_checkpoint(folder)
    if good is not None:
        write_atomic(folder / checkpoints.LATEST, good.name)
    elif (folder / checkpoints.LATEST).exists():
        os.remove(folder / checkpoints.LATEST)
    record = {
        "stage": stage,
        "step": step,
        what: str(value),
        "unsettled_since": guard.unsettled_since,
        "recent_losses": guard.recent[-10:],
        "kept_checkpoint": good.name if good else None,
        "set_aside": set_aside,
    }
    write_atomic(stage_folder / DIVERGED, json.dumps(record, indent=2))
    spike = (
        f" (it had not settled since a spike at step {guard.unsettled_since})"
        if guard.unsettled_since is not None
        else ""
    )
    aside = (
        f" The checkpoints that may hold blown-up weights are set aside as "
        f"{', '.join(SET_ASIDE_PREFIX + name for name in set_aside)}."
        if set_aside
        else ""
    )
    return (
        f"the {what} of stage '{stage}' became {value} at step {step}{spike}; training "
        f"stopped. The last checkpoint before the loss went bad is "
        f"{good or 'none (the stage starts from its beginning on resume)'}.{aside} Resume with "
        f"--resume latest and a lower learning rate (a diverged stage may change "
        f"{', '.join(AFTER_DIVERGENCE)} on resume; emu.json records the change)."
    )


def may_change(stage_folder: Path) -> tuple[str, ...]:
    """The recipe fields a resume of this stage may change: those of
    :data:`AFTER_DIVERGENCE` when the stage diverged, none otherwise."""
    return AFTER_DIVERGENCE if (stage_folder / DIVERGED).is_file() else ()


def resumed_with_changes(
    stage_folder: Path,
    stage: str,
    step: int,
    started: dict[str, Any] | None,
    asked: dict[str, Any],
    earlier: list[dict[str, Any]] | None,
) -> list[dict[str, Any]] | None:
    """The provenance's list of recipe changes made on resume: ``earlier`` ones and, when the
    stage diverged and ``asked`` differs from the recipe it ``started`` with, this one."""
    changed = {
        name: [started[name], asked[name]]
        for name in may_change(stage_folder)
        if started is not None and name in started and started[name] != asked.get(name)
    }
    if not changed:
        return earlier
    diverged = json.loads((stage_folder / DIVERGED).read_text(encoding="utf-8"))
    entry = {
        "stage": stage,
        "resumed_at_step": step,
        "diverged_at_step": diverged.get("step"),
        "changes": changed,
    }
    return [*(earlier or []), entry]
