"""What a training run will do, said before its first step and kept as ``OUT/plan.json``: the
backend, each stage's steps, the batch per process and in all, the resolution beside the data's
image sizes, the samples and the skipped ones, device and precision, and where checkpoints go.
A user sees a wrong batch or a tiny dataset now, not hours later."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emu_cli.data.sources import SampleIndex
from emu_cli.files import write_atomic
from emu_cli.training.recipe import Recipe

log = logging.getLogger("emu")

PLAN = "plan.json"
# Image headers read to describe a large dataset's sizes: enough for its range and median,
# a fraction of a second on a pool of any size.
SIZE_SAMPLE = 512


@dataclass
class ImageSides:
    """The shorter sides of the images read (all of them, or a seeded sample of a large set)."""

    read: int
    of: int
    sides: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, sizes: Mapping[str, tuple[int, int] | None], total: int) -> ImageSides:
        """The sides of ``sizes`` (:func:`~emu_cli.data.dataset.image_sizes`), read of
        ``total`` images."""
        return cls(len(sizes), total, [min(size) for size in sizes.values() if size is not None])

    def smaller_than(self, side: int) -> int:
        """How many of the images read have a shorter side below ``side`` (upscaled to train)."""
        return sum(s < side for s in self.sides)

    def describe(self) -> str:
        if not self.sides:
            return "no readable image among those read"
        ordered = sorted(self.sides)
        middle = ordered[len(ordered) // 2]
        which = "all" if self.read == self.of else f"a sample of {self.read} of {self.of}"
        return f"shorter side {ordered[0]}-{ordered[-1]} px, median {middle} px ({which} read)"


def measure_sides(index: SampleIndex, limit: int | None = SIZE_SAMPLE, seed: int = 0) -> ImageSides:
    """Read image headers (not pixels) of every sample, or of a seeded sample of ``limit``."""
    import numpy as np

    from emu_cli.data.dataset import image_sizes

    samples = index.samples
    if limit is not None and len(samples) > limit:
        chosen = np.random.default_rng([seed, 7]).choice(len(samples), limit, replace=False)
        samples = [samples[i] for i in sorted(chosen)]
    return ImageSides.of(image_sizes(samples), len(index.samples))


@dataclass
class StagePlan:
    name: str
    steps: int
    batch_size: int
    global_batch: int
    resolution: str
    learning_rate: float
    precision: str
    gradient_checkpointing: bool
    optimizer: str
    checkpoint_every: int
    done: bool = False  # completed by the run being resumed


@dataclass
class RunPlan:
    command: str
    backend: str
    preset: str | None
    data: str
    samples: int
    skipped: int
    image_sizes: str
    upscaled: dict[str, int]  # resolution -> images read that are smaller
    device: str
    processes: int
    out: str
    stages: list[StagePlan]
    resume_from: str | None = None
    validation: str | None = None
    # components out of memory while the steps run (quality-tuning: emu_cli.training.set_aside)
    set_aside: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        preset = f" (preset {self.preset})" if self.preset else ""
        lines = [
            f"emu {self.command}: backend {self.backend}{preset}, "
            f"{self.processes} process{'es' if self.processes > 1 else ''} on {self.device}",
            f"  data: {self.data}: {self.samples} samples, {self.skipped} skipped while indexing",
            f"  images: {self.image_sizes}",
        ]
        for stage in self.stages:
            state = " (done: reused)" if stage.done else ""
            lines.append(
                f"  stage {stage.name}{state}: {stage.steps} steps, batch {stage.batch_size} "
                f"per process ({stage.global_batch} in all), {stage.resolution} px, "
                f"lr {stage.learning_rate:g}, precision {stage.precision}"
                f"{', gradient checkpointing' if stage.gradient_checkpointing else ''}"
                f"{', 8-bit AdamW' if stage.optimizer == 'adamw8bit' else ''}, "
                f"checkpoint every {stage.checkpoint_every} steps"
            )
        for side, count in self.upscaled.items():
            if count:
                lines.append(f"  images read smaller than {side} px (upscaled): {count}")
        if self.validation:
            lines.append(f"  validation: {self.validation}")
        if self.set_aside:
            lines.append(
                f"  out of memory during steps: {', '.join(self.set_aside)} (frozen, outputs "
                "cached; read again to sample and save)"
            )
        if self.resume_from:
            lines.append(f"  resuming from {self.resume_from}")
        lines.append(f"  checkpoints: {self.out}/stages/STAGE/checkpoints; model: {self.out}")
        return lines

    def announce(self, out: Path, main_process: bool) -> None:
        """Log the plan and write ``plan.json`` (the main process only)."""
        if not main_process:
            return
        for line in self.lines():
            log.info(line)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / PLAN, json.dumps(asdict(self), indent=2))


def stage_plan(name: str, recipe: Recipe, processes: int, done: bool = False) -> StagePlan:
    phases = recipe.phases()
    resolutions = "->".join(str(resolution) for resolution, _ in phases)
    return StagePlan(
        name=name,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        global_batch=recipe.batch_size * processes * recipe.gradient_accumulation_steps,
        resolution=resolutions,
        learning_rate=recipe.learning_rate,
        precision="fp32" if recipe.mixed_precision == "no" else recipe.mixed_precision,
        gradient_checkpointing=recipe.gradient_checkpointing,
        optimizer=recipe.optimizer,
        checkpoint_every=recipe.checkpoint_every,
        done=done,
    )


def run_plan(
    command: str,
    backend: str,
    preset: str | None,
    data: Path,
    index: SampleIndex,
    sides: ImageSides,
    recipes: dict[str, Recipe],
    accelerator: Any,
    out: Path,
    done: Collection[str] = (),
    **extra: Any,
) -> RunPlan:
    processes = accelerator.num_processes
    resolutions = sorted({r for recipe in recipes.values() for r, _ in recipe.phases()})
    return RunPlan(
        command=command,
        backend=backend,
        preset=preset,
        data=str(data),
        samples=len(index),
        skipped=len(index.rejected),
        image_sizes=sides.describe(),
        upscaled={str(r): sides.smaller_than(r) for r in resolutions},
        device=str(accelerator.device),
        processes=processes,
        out=str(out),
        stages=[stage_plan(n, r, processes, n in done) for n, r in recipes.items()],
        **extra,
    )
