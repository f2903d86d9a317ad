"""``emu pretrain``: train a backend's stages in order, resumable, leaving a checkpoint folder.

Layout of ``--out``::

    OUT/                     the model after the last completed stage (diffusers folder + emu.json)
    OUT/stages/STAGE/        log.jsonl, loss.png, previews/*.png, summary.json, and with
                             --validate-every, for the stage that generates: curve.json,
                             curve.png, validation/step-N.png
    OUT/stages/STAGE/checkpoints/step-NNNNNNNN/   resumable training state
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu_cli.checkpoint import state as checkpoints
from emu_cli.checkpoint.folder import PROVENANCE, load_checkpoint, read_provenance, save_checkpoint
from emu_cli.config import changes
from emu_cli.data.sources import SampleIndex, index_dataset
from emu_cli.errors import EmuError
from emu_cli.plugin.backend import PRESETS, Backend, Model
from emu_cli.runtime import quiet_libraries
from emu_cli.training.early_stopping import CurveOnly
from emu_cli.training.recipe import Recipe
from emu_cli.training.trainer import StageResult, Trainer
from emu_cli.training.validation import GenerationMonitor, ValidationSettings

log = logging.getLogger("emu")


def make_accelerator(device: str, recipe: Recipe) -> Any:
    """An ``accelerate.Accelerator`` for ``--device auto|cpu|cuda``; under ``accelerate launch``
    or ``torchrun`` it joins the process group (gloo on CPU, NCCL on GPUs)."""
    import torch
    from accelerate import Accelerator

    if device == "cuda" and not torch.cuda.is_available():
        raise EmuError("--device cuda was asked for but no CUDA device is available")
    return Accelerator(
        cpu=device == "cpu",
        mixed_precision=recipe.mixed_precision,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
    )


def stage_recipe(
    backend: Backend, stage: str, preset: str, overrides: dict[str, Any], per_stage: dict
) -> Recipe:
    """The stage's preset defaults, then the user's overrides, then overrides for this stage."""
    defaults = backend.stage(stage).defaults.get(preset, {})
    specific = per_stage.get(stage, {}) or {}
    unknown = set(specific) - Recipe.field_names()
    if unknown:
        raise EmuError(
            f"stages_recipe.{stage} has unknown recipe keys: {', '.join(sorted(unknown))}"
        )
    recipe = Recipe().updated(**defaults).updated(**overrides).updated(**specific)
    recipe = honour_noise_offset(backend, recipe, {**overrides, **specific})
    if (
        "steps" in {**overrides, **specific}
        and recipe.resolution_schedule
        and ("resolution_schedule" not in {**overrides, **specific})
    ):
        recipe.resolution_schedule = []  # a new step count replaces the preset's phases
    return recipe.validate()


def honour_noise_offset(backend: Backend, recipe: Recipe, asked: dict[str, Any]) -> Recipe:
    """A backend that adds no Gaussian noise has no noise offset: asking for one is an error,
    and its recipe records none, so that emu.json says what training did (the shared recipe's
    default is 0.1)."""
    if backend.uses_noise_offset:
        return recipe
    if asked.get("noise_offset"):
        raise EmuError(
            f"backend '{backend.name}' adds no Gaussian noise, so it has no noise offset "
            f"(got noise_offset={asked['noise_offset']}); leave it out"
        )
    return recipe.updated(noise_offset=0.0)


@dataclass
class PretrainResult:
    out: Path
    stages: list[StageResult] = field(default_factory=list)


def report_index(index: SampleIndex) -> None:
    """Say what indexing passed over (missing files, empty or overlong captions)."""
    if index.rejected:
        named = "; ".join(f"{key} ({reason})" for key, reason in index.rejected[:5])
        log.info(f"{len(index.rejected)} samples skipped while indexing, e.g. {named}")


def pretrain(
    backend: Backend,
    *,
    data: Path,
    out: Path,
    preset: str = "tiny",
    stages: list[str] | None = None,
    recipe_overrides: dict[str, Any] | None = None,
    per_stage: dict[str, dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    device: str = "auto",
    resume: str | None = None,
    validation: ValidationSettings | None = None,
) -> PretrainResult:
    """``validation`` (with ``validate_every`` set) judges the generating stage's model as it
    trains and records the curve; it never stops a stage or picks a step."""
    quiet_libraries()
    if preset not in PRESETS:
        raise EmuError(f"preset must be one of {', '.join(PRESETS)}, got '{preset}'")
    recipe_overrides = {k: v for k, v in (recipe_overrides or {}).items() if v is not None}
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
    # every stage's recipe is checked before anything is read or trained, so that a bad value
    # for a later stage does not stop the run hours in
    recipes = {
        name: stage_recipe(backend, name, preset, recipe_overrides, per_stage) for name in names
    }
    out = Path(out)
    existing = (out / PROVENANCE).is_file() or (out / "stages").is_dir()
    if existing and resume is None:
        raise EmuError(
            f"'{out}' already holds a run; pass --resume latest to continue it, or choose "
            "another --out"
        )
    if resume is not None and (out / PROVENANCE).is_file():  # stages it completed are reused
        refuse_changed_settings(out, preset, options or {})
    index = index_dataset(data)
    report_index(index)
    accelerator = make_accelerator(device, recipes[names[0]])

    completed: list[str] = []
    provenance: dict[str, Any] = {}
    if (out / PROVENANCE).is_file():
        provenance = read_provenance(out)
        completed = list(provenance.get("stages_completed", []))
    result = PretrainResult(out)
    for name in names:
        recipe = recipes[name]
        folder = out / "stages" / name
        if name in completed and resume is not None:
            log.info(f"stage '{name}' already completed; reusing it")
            continue
        resume_from = None
        if resume is not None:
            resume_from = checkpoints.latest_checkpoint(folder / "checkpoints")
            if resume not in ("latest", None):
                resume_from = _checkpoint_of(Path(resume), name)
        model = _starting_model(
            backend, preset, options or {}, out, resume_from, name, recipe, index
        )
        record = {
            "preset": preset,
            "stages_completed": completed,
            "recipes": {**provenance.get("recipes", {}), name: recipe.to_dict()},
            "data": {
                "source": str(data),
                "fingerprint": index.fingerprint(),
                "samples": len(index),
                "rejected_while_indexing": len(index.rejected),
            },
            "parent": provenance.get("parent"),
            "processes": accelerator.num_processes,
        }
        if resume_from is not None:
            log.info(f"resuming stage '{name}' from {resume_from}")
        monitor = _monitor(backend, name, validation, folder, recipe.seed)
        trainer = Trainer(backend, model, name, recipe, index, folder, accelerator, monitor=monitor)
        stage_result = trainer.run(resume_from, record)
        completed = [*completed, name]
        steps = {**provenance.get("steps", {}), name: stage_result.steps}
        provenance = {
            **record,
            "stage": name,
            "stages_completed": completed,
            "steps": steps,
            "step": stage_result.steps,
            "holdout_metrics": {
                **provenance.get("holdout_metrics", {}),
                name: stage_result.metrics,
            },
        }
        if accelerator.is_main_process:
            save_checkpoint(backend, model, out, provenance)
        accelerator.wait_for_everyone()
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


def _checkpoint_of(path: Path, stage: str) -> Path:
    """``--resume PATH``: a training checkpoint (``stages/STAGE/checkpoints/step-N``) of
    ``stage``; its optimizer state belongs to that stage's parameters only."""
    if not (path / "model" / PROVENANCE).is_file():
        raise EmuError(
            f"--resume '{path}' is not a training checkpoint (a folder "
            "stages/STAGE/checkpoints/step-N of a run, or 'latest')"
        )
    saved = read_provenance(path / "model").get("stage")
    if saved != stage:
        raise EmuError(
            f"--resume '{path}' is a checkpoint of stage '{saved}', not of '{stage}', the "
            "stage to train next (--stage names the stages to train)"
        )
    return path


# Recipe fields a resumed stage may change: they decide what is written and how the arithmetic
# runs (a run moved to a machine without bf16), not what is learned.
MAY_CHANGE_ON_RESUME = {
    "checkpoint_every",
    "preview_every",
    "keep_checkpoints",
    "num_workers",
    "mixed_precision",
    "attention",
}


def _starting_model(
    backend: Backend,
    preset: str,
    options: dict[str, Any],
    out: Path,
    resume_from: Path | None,
    stage: str,
    recipe: Recipe,
    index: SampleIndex,
) -> Model:
    """A new model, or the run's model to continue: its checkpoint mid-stage, or the model of
    the stages it has completed (whose settings ``pretrain`` checked before reading data)."""
    if resume_from is not None:
        refuse_changed_settings(resume_from / "model", preset, options, stage, recipe, index)
        return load_checkpoint(resume_from / "model", backend)[1]
    if (out / PROVENANCE).is_file():
        return load_checkpoint(out, backend)[1]
    from accelerate.utils import set_seed

    set_seed(recipe.seed)  # the same --seed builds the same initial weights in every process
    return backend.build(preset, options)


def refuse_changed_settings(
    path: Path,
    preset: str,
    options: dict[str, Any],
    stage: str | None = None,
    recipe: Recipe | None = None,
    index: SampleIndex | None = None,
) -> None:
    """A continued run keeps what it was started with: the preset and options its model was
    built with, and the recipe and data of ``stage`` if it stopped half-way. A change would
    give neither run while emu.json recorded the new settings, so it is refused, not ignored."""
    provenance = read_provenance(path)
    built = {**provenance.get("options", {}), "preset": provenance.get("preset", preset)}
    changed = changes(
        built, {**options, "preset": preset}, ["preset", *sorted(set(options) & set(built))]
    )
    started = provenance.get("recipes", {}).get(stage)
    if started is not None and recipe is not None and index is not None:  # the stage has begun
        asked = recipe.to_dict()
        changed += changes(started, asked, sorted(set(started) & set(asked) - MAY_CHANGE_ON_RESUME))
        data = provenance.get("data") or {}
        if data.get("fingerprint", index.fingerprint()) != index.fingerprint():
            changed.append(f"data {data.get('source')} -> {index.source} (other samples)")
    if changed:
        raise EmuError(
            f"'{path}' was trained with other settings ({'; '.join(changed)}); continue it "
            "with the settings it started with, or train afresh in another --out"
        )
