"""One training session over one run folder, shared by pre-training and quality-tuning.

A session owns what every training run does around its stages: it refuses a folder that holds
another run unless asked to resume, finds the checkpoint to resume from, makes the accelerator,
refuses a resume with other settings than the run started with, writes the provenance record
with the model, and waits for every process. Pre-training and quality-tuning are short recipes
over it (:mod:`emu_cli.training.pretrain`, :mod:`emu_cli.training.quality_tune`).

Layout of a run folder::

    OUT/                     the model (diffusers folder + emu.json)
    OUT/stages/NAME/         log.jsonl, loss.png, previews/, summary.json; curve.json,
                             curve.png and validation/ where it was judged; best/ (quality-tuning)
    OUT/stages/NAME/checkpoints/step-NNNNNNNN/   resumable training state
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from emu_cli.checkpoint import state as checkpoints
from emu_cli.checkpoint.folder import PROVENANCE, read_provenance, save_checkpoint
from emu_cli.checkpoint.provenance import DataRecord, Provenance
from emu_cli.config import changes
from emu_cli.data.origin import is_world_pool
from emu_cli.data.sources import SampleIndex
from emu_cli.errors import EmuError
from emu_cli.lock import FolderLock
from emu_cli.plugin.backend import Backend, Model
from emu_cli.runtime import resolve_device
from emu_cli.training import divergence
from emu_cli.training.recipe import Recipe
from emu_cli.training.trackers import chosen_trackers, start_trackers

log = logging.getLogger("emu")

# Recipe fields a resumed stage may change: they decide what is written and how the arithmetic
# runs (a run moved to a machine without bf16), not what is learned.
MAY_CHANGE_ON_RESUME = {
    "checkpoint_every",
    "preview_every",
    "keep_checkpoints",
    "num_workers",
    "mixed_precision",
    "attention",
    "gradient_checkpointing",
    "loss_spike_factor",
    "report_to",
}


def make_accelerator(device: str, recipe: Recipe, out: Path) -> Any:
    """An ``accelerate.Accelerator`` for ``--device auto|cpu|cuda``; under ``accelerate launch``
    or ``torchrun`` it joins the process group (gloo on CPU, NCCL on GPUs). Its trackers are
    the recipe's ``report_to``, logging under ``out/logs``."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    resolve_device(device)  # refuses cuda where there is none
    trackers = chosen_trackers(recipe.report_to)
    # accelerate keeps one precision per process; a second run in the same Python (a notebook,
    # a script training twice) may ask for another, so the last run's is let go
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=device == "cpu",
        mixed_precision=recipe.mixed_precision,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        log_with=trackers or None,
        project_dir=str(out / "logs"),
    )
    start_trackers(accelerator, out, recipe.to_dict())
    return accelerator


def report_index(index: SampleIndex) -> None:
    """Say what indexing passed over (missing files, empty or overlong captions)."""
    if index.rejected:
        named = "; ".join(f"{key} ({reason})" for key, reason in index.rejected[:5])
        log.info(f"{len(index.rejected)} samples skipped while indexing, e.g. {named}")


def data_record(index: SampleIndex, source: Path, **extra: Any) -> DataRecord:
    return DataRecord(
        source=str(source),
        fingerprint=index.fingerprint(),
        samples=len(index),
        rejected_while_indexing=len(index.rejected),
        world=is_world_pool(source),
        **extra,
    )


def refuse_changed_settings(
    path: Path,
    preset: str,
    options: dict[str, Any],
    stage: str | None = None,
    recipe: Recipe | None = None,
    index: SampleIndex | None = None,
    may_change: Collection[str] = (),
) -> None:
    """A continued run keeps what it was started with: the preset and options its model was
    built with, and the recipe and data of ``stage`` if it stopped half-way. A change would
    give neither run while emu.json recorded the new settings, so it is refused, not ignored;
    except the recipe fields ``may_change`` names (a diverged stage's learning rate: see
    :mod:`emu_cli.training.divergence`), which emu.json records."""
    provenance = read_provenance(path)
    built = {**provenance.options, "preset": provenance.preset or preset}
    changed = changes(
        built, {**options, "preset": preset}, ["preset", *sorted(set(options) & set(built))]
    )
    started = provenance.recipes.get(stage) if stage is not None else None
    if started is not None and recipe is not None and index is not None:  # the stage has begun
        asked = recipe.to_dict()
        fixed = set(started) & set(asked) - MAY_CHANGE_ON_RESUME - set(may_change)
        changed += changes(started, asked, sorted(fixed))
        data = provenance.data
        if data is not None and data.fingerprint != index.fingerprint():
            changed.append(f"data {data.source} -> {index.source} (other samples)")
    if changed:
        raise EmuError(
            f"'{path}' was trained with other settings ({'; '.join(changed)}); continue it "
            "with the settings it started with, or train afresh in another --out"
        )


class TrainingSession:
    """The run folder ``out``, started afresh or resumed (``resume``: None, ``"latest"``, or a
    checkpoint folder ``stages/NAME/checkpoints/step-N``), held by this run alone for the
    ``with`` block (:class:`~emu_cli.lock.FolderLock`)."""

    def __init__(self, out: Path, resume: str | None) -> None:
        self.out = Path(out)
        self.resume = resume
        self.accelerator: Any = None
        self.lock = FolderLock(self.out)

    def __enter__(self) -> TrainingSession:
        self.lock.acquire()  # before looking: two runs starting together cannot both pass
        holds_a_run = (self.out / PROVENANCE).is_file() or (self.out / "stages").is_dir()
        if holds_a_run and self.resume is None:
            self.lock.release()
            raise EmuError(
                f"'{self.out}' already holds a run; pass --resume latest to continue it, or "
                "choose another --out"
            )
        return self

    def __exit__(self, *exception: object) -> None:
        try:
            if self.accelerator is not None and self.accelerator.trackers:
                self.accelerator.end_training()  # closes the trackers' files and runs
        finally:
            self.lock.release()

    @property
    def has_model(self) -> bool:
        """Whether the folder holds a model already (the stages a resumed run completed)."""
        return (self.out / PROVENANCE).is_file()

    def saved(self) -> Provenance | None:
        return read_provenance(self.out) if self.has_model else None

    def stage_folder(self, name: str) -> Path:
        return self.out / "stages" / name

    def resume_point(
        self, name: str, refusal: Callable[[Provenance | None], str | None]
    ) -> Path | None:
        """The checkpoint stage folder ``name`` continues from: none when starting afresh, the
        newest intact one for ``latest``, or the one named, which must be a training checkpoint
        of this stage (its optimizer state is of this stage's parameters). ``refusal`` says why
        a checkpoint's record (None: the folder holds no training checkpoint) is not one, or
        returns None."""
        if self.resume is None:
            return None
        if self.resume == "latest":
            return checkpoints.latest_checkpoint(self.stage_folder(name) / "checkpoints")
        path = Path(self.resume)
        saved = path / "model"
        why = refusal(read_provenance(saved) if (saved / PROVENANCE).is_file() else None)
        if why:
            raise EmuError(f"--resume '{path}' {why}")
        return path

    def check_resume(
        self,
        resume_from: Path,
        stage: str,
        preset: str,
        options: dict[str, Any],
        recipe: Recipe,
        index: SampleIndex,
    ) -> list[dict[str, Any]] | None:
        """Refuse to continue checkpoint ``resume_from`` of ``stage`` with other settings (see
        :func:`refuse_changed_settings`); return the record of the changes a diverged stage
        may make, for the provenance's ``resumed_with_changes``."""
        folder = self.stage_folder(stage)
        saved = resume_from / "model"
        refuse_changed_settings(
            saved, preset, options, stage, recipe, index, divergence.may_change(folder)
        )
        record = read_provenance(saved)
        return divergence.resumed_with_changes(
            folder,
            stage,
            record.step or 0,
            record.recipes.get(stage),
            recipe.to_dict(),
            record.resumed_with_changes,
        )

    def start(self, device: str, recipe: Recipe) -> Any:
        self.accelerator = make_accelerator(device, recipe, self.out)
        return self.accelerator

    def save(self, backend: Backend, model: Model, provenance: Provenance) -> None:
        """The model and its record into the run folder, by the main process; then every
        process waits, so none reads a half-written folder."""
        if self.accelerator.is_main_process:
            save_checkpoint(backend, model, self.out, provenance)
        self.accelerator.wait_for_everyone()
