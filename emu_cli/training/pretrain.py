"""``emu pretrain``: train a backend's stages in order, resumable, in one run folder
(:class:`~emu_cli.training.session.TrainingSession`); the folder's model is the one after the
last completed stage."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu_cli.checkpoint.folder import load_checkpoint
from emu_cli.checkpoint.provenance import Provenance
from emu_cli.data.origin import is_world_pool
from emu_cli.data.sources import index_dataset
from emu_cli.errors import EmuError
from emu_cli.plugin.backend import PRESETS, Backend, Model
from emu_cli.runtime import quiet_libraries
from emu_cli.training.early_stopping import CurveOnly
from emu_cli.training.plan import measure_sides, run_plan
from emu_cli.training.recipe import Recipe
from emu_cli.training.resolution import Layer, ResolvedRecipe, stage_recipe
from emu_cli.training.session import (
    TrainingSession,
    data_record,
    refuse_changed_settings,
    report_index,
)
from emu_cli.training.trainer import StageResult, Trainer
from emu_cli.training.validation import GenerationMonitor, ValidationSettings

log = logging.getLogger("emu")


@dataclass
class PretrainResult:
    out: Path
    stages: list[StageResult] = field(default_factory=list)


def pretraining_recipes(
    backend: Backend,
    preset: str,
    stages: list[str] | None = None,
    overrides: Sequence[Layer] = (),
    per_stage: Mapping[str, Mapping[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, ResolvedRecipe]:
    """The recipe of each stage to train, in order (``--print-recipe`` shows them). Every one
    is checked before anything is read or trained, so that a bad value for a later stage does
    not stop the run hours in."""
    if preset not in PRESETS:
        raise EmuError(f"preset must be one of {', '.join(PRESETS)}, got '{preset}'")
    per_stage = per_stage or {}
    names = stages or backend.default_stages(preset, options or {})
    for name in names:
        backend.stage(name)
    known = [stage.name for stage in backend.stages]
    strays = sorted(set(per_stage) - set(known))
    if strays:
        raise EmuError(
            f"stages_recipe names no stage of backend '{backend.name}': {', '.join(strays)} "
            f"(stages: {', '.join(known)})"
        )
    return {name: stage_recipe(backend, name, preset, overrides, per_stage) for name in names}


def pretrain(
    backend: Backend,
    *,
    data: Path,
    out: Path,
    preset: str = "tiny",
    stages: list[str] | None = None,
    overrides: Sequence[Layer] = (),
    per_stage: Mapping[str, Mapping[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    device: str = "auto",
    resume: str | None = None,
    validation: ValidationSettings | None = None,
) -> PretrainResult:
    """``overrides`` are the recipe's layers over the preset (config file, command line: see
    :mod:`emu_cli.training.resolution`). ``validation`` (with ``validate_every`` set) judges
    the generating stage's model as it trains and records the curve; it never stops a stage or
    picks a step."""
    quiet_libraries()
    if validation is not None and validation.validate_every:  # checked before any work
        validation = validation.resolved(is_world_pool(data), "emu pretrain --validate-every")
    resolved = pretraining_recipes(backend, preset, stages, overrides, per_stage, options)
    recipes = {name: stage.recipe for name, stage in resolved.items()}
    names = list(recipes)
    with TrainingSession(out, resume) as session:
        saved = session.saved()
        if resume is not None and saved is not None:  # stages it completed are reused
            refuse_changed_settings(session.out, preset, options or {})
        # a folder of images alone is enough when no stage to train reads a caption
        readers = [n for n in names if backend.stage(n).reads_captions]
        index = index_dataset(data, captions_for=f"stage {readers[0]}" if readers else None)
        report_index(index)
        accelerator = session.start(device, recipes[names[0]])

        completed = list(saved.stages_completed) if saved else []
        validating = validation is not None and validation.validate_every
        run_plan(
            "pretrain", backend.name, preset, data, index, measure_sides(index, seed=0), recipes,
            accelerator, session.out, done=completed if resume is not None else (),
            resume_from=resume,
            validation=validation.describe(None) if validating else None,
        ).announce(session.out, accelerator.is_main_process)  # fmt: skip
        provenance = saved or Provenance(backend=backend.name)
        result = PretrainResult(session.out)
        for name in names:
            recipe = recipes[name]
            folder = session.stage_folder(name)
            if name in completed and resume is not None:
                log.info(f"stage '{name}' already completed; reusing it")
                continue
            resume_from = session.resume_point(name, _not_of_stage(name))
            changes = provenance.resumed_with_changes
            if resume_from is not None:
                changes = session.check_resume(
                    resume_from, name, preset, options or {}, recipe, index
                )
            model = _starting_model(backend, preset, options or {}, session, resume_from, recipe)
            record = Provenance(
                backend=backend.name,
                preset=preset,
                stages_completed=completed,
                recipes={**provenance.recipes, name: recipe.to_dict()},
                data=data_record(index, data),
                parent=provenance.parent,
                processes=accelerator.num_processes,
                resumed_with_changes=changes,
            )
            if resume_from is not None:
                log.info(f"resuming stage '{name}' from {resume_from}")
            monitor = _monitor(backend, name, validation, folder, recipe.seed)
            before = sum(recipes[n].steps for n in names[: names.index(name)])
            trainer = Trainer(
                backend, model, name, recipe, index, folder, accelerator,
                monitor=monitor, step_offset=before,
            )  # fmt: skip
            stage_result = trainer.run(resume_from, record)
            completed = [*completed, name]
            provenance = record.with_changes(
                stage=name,
                stages_completed=completed,
                steps={**provenance.steps, name: stage_result.steps},
                step=stage_result.steps,
                holdout_metrics={**(provenance.holdout_metrics or {}), name: stage_result.metrics},
            )
            session.save(backend, model, provenance)
            result.stages.append(stage_result)
        return result


def _monitor(
    backend: Backend,
    stage: str,
    validation: ValidationSettings | None,
    folder: Path,
    seed: int,
) -> GenerationMonitor | None:
    """The curve's recorder for the stage that generates images; none for the others (a
    tokenizer or an autoencoder alone draws nothing from text). Pre-training validates only
    when asked: it has no default interval."""
    if validation is None or not validation.validate_every:
        return None
    if stage != backend.generator_stage():
        return None
    return validation.monitor(backend, CurveOnly(), folder, seed=seed)


def _not_of_stage(stage: str):
    """Why a training checkpoint named by ``--resume PATH`` cannot continue ``stage``: its
    optimizer state belongs to another stage's parameters."""

    def refusal(saved: Provenance | None) -> str | None:
        if saved is None:
            return (
                "is not a training checkpoint (a folder stages/STAGE/checkpoints/step-N of a "
                "run, or 'latest')"
            )
        if saved.stage == stage:
            return None
        return (
            f"is a checkpoint of stage '{saved.stage}', not of '{stage}', the stage to train "
            "next (--stage names the stages to train)"
        )

    return refusal


def _starting_model(
    backend: Backend,
    preset: str,
    options: dict[str, Any],
    session: TrainingSession,
    resume_from: Path | None,
    recipe: Recipe,
) -> Model:
    """A new model, or the run's model to continue: its checkpoint mid-stage (whose settings
    ``pretrain`` checked), or the model of the stages it has completed (checked before reading
    data)."""
    if resume_from is not None:
        return load_checkpoint(resume_from / "model", backend)[1]
    if session.has_model:
        return load_checkpoint(session.out, backend)[1]
    from accelerate.utils import set_seed

    set_seed(recipe.seed)  # the same --seed builds the same initial weights in every process
    return backend.build(preset, options)
