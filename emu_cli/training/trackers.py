"""The experiment trackers people already watch (``--report-to tensorboard|wandb|all``), through
accelerate's trackers: every number the training log records (loss, learning rate, images/s,
validation scores) and the preview and validation grids, tagged ``STAGE/NAME``.

TensorBoard's event files go to ``OUT/logs/emu/``; a Weights & Biases run is named after the
run folder. Steps count on across a run's stages, as a tracker expects them to rise."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from emu_cli.errors import EmuError

REPORT_TO = ("none", "tensorboard", "wandb", "all")
PROJECT = "emu"
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def chosen_trackers(report_to: str) -> list[str]:
    """The trackers ``report_to`` names, each one's package checked before any work."""
    if report_to not in REPORT_TO:
        raise EmuError(f"report_to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to == "none":
        return []
    installed = [n for n, p in _PACKAGES.items() if importlib.util.find_spec(p) is not None]
    if report_to == "all":
        if not installed:
            raise EmuError(
                "--report-to all found no tracker installed: pip install tensorboard or wandb"
            )
        return installed
    if report_to not in installed:
        raise EmuError(
            f"--report-to {report_to} needs the {_PACKAGES[report_to]} package: "
            f"pip install {_PACKAGES[report_to]}"
        )
    return [report_to]


def start_trackers(accelerator: Any, out: Path, config: dict[str, Any]) -> None:
    """Open the accelerator's trackers for the run in ``out``, with the recipe as their
    hyper-parameters (scalars only: what TensorBoard's hparams take)."""
    if not accelerator.log_with:
        return
    flat = {k: v for k, v in config.items() if isinstance(v, bool | int | float | str)}
    accelerator.init_trackers(PROJECT, config=flat, init_kwargs={"wandb": {"name": out.name}})


class StageTrackers:
    """One stage's view of the run's trackers: its tags, and its steps after those of the
    stages before it."""

    def __init__(self, accelerator: Any, stage: str, step_offset: int = 0) -> None:
        self.accelerator, self.stage, self.offset = accelerator, stage, step_offset

    @property
    def active(self) -> bool:
        return bool(self.accelerator.trackers)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        numbers = {
            f"{self.stage}/{k}": float(v)
            for k, v in values.items()
            if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
        }
        if numbers and self.active:
            self.accelerator.log(numbers, step=self.offset + step)

    def image(self, step: int, name: str, path: Path) -> None:
        """A PNG grid the run wrote, as the image ``STAGE/name`` at ``step``."""
        if not self.active:
            return
        import numpy as np
        from PIL import Image

        with Image.open(path) as grid:
            pixels = np.asarray(grid.convert("RGB"))[None]  # one image, height x width x RGB
        for tracker in self.accelerator.trackers:
            options = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
            tracker.log_images({f"{self.stage}/{name}": pixels}, step=self.offset + step, **options)
