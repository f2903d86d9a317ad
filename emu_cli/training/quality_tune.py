"""``emu quality-tune``: the paper's supervised fine-tuning of a pre-trained model on a small,
curated, very appealing set. One recipe for every backend, here and nowhere else.

The paper (stage 5): batch 64, noise offset 0.1, at most 15K iterations, stopped early on
purpose while the loss still fell, since longer training on so few images overfits. It gives
no learning rate; ours is a small constant rate after a short warm-up, with an EMA of the
weights, a documented and configurable default. The iteration cap scales with the preset.

The early stopping the paper did by hand is done here by :class:`GenerationMonitor`: a fixed
prompt set is generated and judged every ``validate_every`` steps, the best checkpoint is kept
and becomes the result, and training stops when appeal stops rising or faithfulness falls.

Layout of ``--out``: the chosen model (diffusers folder + ``emu.json``) and
``stages/quality-tune/`` (log, loss.png, curve.json, curve.png, validation/step-N.png,
checkpoints/, best/).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu_cli.checkpoint import state as checkpoints
from emu_cli.checkpoint.folder import (
    PROVENANCE,
    load_checkpoint,
    locate_checkpoint,
    read_provenance,
    save_checkpoint,
)
from emu_cli.data.sources import SampleIndex, index_dataset
from emu_cli.errors import EmuError
from emu_cli.runtime import quiet_libraries
from emu_cli.training.recipe import Recipe
from emu_cli.training.validation import ValidationSettings

log = logging.getLogger("emu")

STAGE_FOLDER = "quality-tune"

# The recipe, per preset of the pre-trained model. Shared by every backend; the stage's
# resolution comes from the model's own pre-training.
QT_RECIPE: dict[str, Any] = {
    "batch_size": 64,
    "noise_offset": 0.1,  # diffusion backends; a masked model has no Gaussian noise to offset
    "lr_schedule": "constant",
    "caption_dropout": 0.1,
    "preview_every": 0,  # the validation grids show what previews would
    "resolution_schedule": [],
}
QT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 12, "batch_size": 8, "learning_rate": 1e-4, "warmup_steps": 2,
             "ema_decay": 0.9, "checkpoint_every": 4},
    "small": {"steps": 600, "learning_rate": 1e-4, "warmup_steps": 20, "ema_decay": 0.99,
              "checkpoint_every": 100},
    "base": {"steps": 15_000, "learning_rate": 1e-5, "warmup_steps": 500, "ema_decay": 0.999,
             "checkpoint_every": 1000},
}  # fmt: skip
VALIDATE_EVERY = {"tiny": 4, "small": 50, "base": 500}


@dataclass
class EarlyStoppingSettings(ValidationSettings):
    """The validation (``validate_every`` defaults per preset: VALIDATE_EVERY) and the rule."""

    enabled: bool = True
    patience: int = 3
    min_delta: float = 0.0
    faithfulness_margin: float = 0.1
    window: int = 2  # validations whose mean appeal a step is judged on


@dataclass
class QualityTuneResult:
    out: Path
    steps: int
    chosen_step: int
    stopped_early: str | None
    encoder_calls: int
    cached_rows: int


def qt_recipe(
    preset: str,
    pretrain_recipe: dict[str, Any],
    overrides: dict[str, Any],
    lr_scale: float = 1.0,
) -> Recipe:
    """The quality-tuning recipe: the shared defaults, the preset's (its learning rate times
    the backend's ``quality_tune_lr_scale``), the user's overrides."""
    if preset not in QT_PRESETS:
        raise EmuError(f"preset must be one of {', '.join(QT_PRESETS)}, got '{preset}'")
    known = {k: v for k, v in pretrain_recipe.items() if k in Recipe.field_names()}
    pretrained = Recipe().updated(**known)
    defaults = QT_PRESETS[preset]
    return (
        Recipe(resolution=pretrained.phases()[-1][0], seed=pretrained.seed)
        .updated(**QT_RECIPE)
        .updated(**{**defaults, "learning_rate": defaults["learning_rate"] * lr_scale})
        .updated(**{k: v for k, v in overrides.items() if v is not None})
        .validate()
    )


def subset(index: SampleIndex, count: int | None, seed: int) -> SampleIndex:
    """``count`` samples drawn at random (seeded): the paper's data-size ablation."""
    if count is None or count >= len(index.samples):
        return index
    if count < 1:
        raise EmuError(f"--subset must be >= 1, got {count}")
    import numpy as np

    chosen = sorted(np.random.default_rng([seed, 100]).choice(len(index.samples), count, False))
    return SampleIndex(index.source, [index.samples[i] for i in chosen], index.rejected)


def quality_tune(
    model_path: str | Path,
    *,
    data: Path,
    out: Path,
    recipe_overrides: dict[str, Any] | None = None,
    early_stopping: EarlyStoppingSettings | None = None,
    subset_size: int | None = None,
    device: str = "auto",
    resume: str | None = None,
) -> QualityTuneResult:
    from emu_cli.data.dataset import TrainingDataset, count_smaller
    from emu_cli.training.cache import EncodingCache
    from emu_cli.training.early_stopping import EarlyStopping
    from emu_cli.training.pretrain import (
        honour_noise_offset,
        make_accelerator,
        refuse_changed_settings,
        report_index,
    )
    from emu_cli.training.trainer import Trainer

    quiet_libraries()
    settings = early_stopping or EarlyStoppingSettings()
    out = Path(out)
    folder = out / "stages" / STAGE_FOLDER
    if ((out / PROVENANCE).is_file() or folder.is_dir()) and resume is None:
        raise EmuError(
            f"'{out}' already holds a run; pass --resume latest to continue it, or choose "
            "another --out"
        )
    located = locate_checkpoint(model_path)  # a folder, or a Hub repo pinned to its commit
    backend, model, parent = load_checkpoint(located.path)
    stage = backend.generator_stage()
    if stage not in parent.get("stages_completed", []):
        raise EmuError(
            f"'{model_path}' has not completed stage '{stage}' of backend '{backend.name}', "
            "the stage quality-tuning fine-tunes; pre-train it first"
        )
    preset = parent.get("preset", "small")
    recipe = qt_recipe(
        preset,
        parent.get("recipes", {}).get(stage, {}),
        recipe_overrides or {},
        lr_scale=backend.quality_tune_lr_scale,
    )
    recipe = honour_noise_offset(backend, recipe, recipe_overrides or {})
    index = subset(index_dataset(data), subset_size, recipe.seed)
    report_index(index)
    upscaled = count_smaller(index, recipe.resolution)
    if upscaled:  # the recipe's point is sharp, well-made images; an upscaled one is neither
        log.info(
            f"{upscaled} of {len(index)} curated images are smaller than the "
            f"{recipe.resolution} px the model trains at: they are upscaled"
        )
    resume_from = None
    if resume is not None:
        resume_from = checkpoints.latest_checkpoint(folder / "checkpoints")
        if resume != "latest":
            resume_from = Path(resume)
            saved = resume_from / "model"
            tuning = (saved / PROVENANCE).is_file() and STAGE_FOLDER in read_provenance(saved).get(
                "recipes", {}
            )
            if not tuning:  # e.g. a pre-training checkpoint: another stage's optimizer state
                raise EmuError(
                    f"--resume '{resume}' is not a quality-tuning checkpoint (a folder "
                    f"stages/{STAGE_FOLDER}/checkpoints/step-N of a quality-tuning run, or "
                    "'latest')"
                )
    if resume_from is not None:
        refuse_changed_settings(resume_from / "model", preset, {}, STAGE_FOLDER, recipe, index)
        log.info(f"resuming quality-tuning from {resume_from}")
        model = load_checkpoint(resume_from / "model", backend)[1]
    accelerator = make_accelerator(device, recipe)
    model.to(accelerator.device)

    cache = EncodingCache(backend, batch_size=recipe.batch_size)
    view = TrainingDataset(
        index,
        recipe.resolution,
        random_flip=recipe.random_flip,
        caption_dropout=recipe.caption_dropout,
    )
    cache.warm(model, stage, view.variants(), view.variant_count())
    warm_calls = cache.encoder_calls

    monitor = None
    if settings.enabled:
        rule = EarlyStopping(
            settings.patience,
            settings.min_delta,
            settings.faithfulness_margin,
            window=settings.window,
        )
        monitor = settings.monitor(
            backend, rule, folder, seed=recipe.seed, default_every=VALIDATE_EVERY[preset]
        )
    record = {
        "preset": preset,
        "stages_completed": parent.get("stages_completed", []),
        "recipes": {**parent.get("recipes", {}), STAGE_FOLDER: recipe.to_dict()},
        "data": {
            "source": str(data),
            "fingerprint": index.fingerprint(),
            "samples": len(index),
            "rejected_while_indexing": len(index.rejected),
            "upscaled": upscaled,
        },
        "pretraining_data": parent.get("data"),
        "parent": located.name,
        "parent_repo": located.repo,  # the Hub repo it came from: the card's base_model
        "processes": accelerator.num_processes,
    }
    trainer = Trainer(
        backend, model, stage, recipe, index, folder, accelerator,
        encode=cache.encode, monitor=monitor,
    )  # fmt: skip
    result = trainer.run(resume_from, record)

    chosen_step, curve = result.steps, None
    best = folder / "best"
    if monitor is not None:
        curve = monitor.rule.to_dict()
        chosen_step = monitor.rule.best_step
        if (best / PROVENANCE).is_file():
            model = load_checkpoint(best, backend)[1]
    provenance = {
        **record,
        "stage": STAGE_FOLDER,
        "steps": {**parent.get("steps", {}), STAGE_FOLDER: chosen_step},
        "step": chosen_step,
        "quality_tuning": {
            "stage": stage,
            "steps_trained": result.steps,
            "chosen_step": chosen_step,
            "stopped_early": result.stopped_early,
            "judge": settings.judge if monitor else None,
            "curve": curve,
            "encoder_calls_while_training": cache.encoder_calls - warm_calls,
            "cached_rows": len(cache),
        },
    }
    if accelerator.is_main_process:
        save_checkpoint(backend, model, out, provenance)
    accelerator.wait_for_everyone()
    return QualityTuneResult(
        out,
        result.steps,
        chosen_step,
        result.stopped_early,
        cache.encoder_calls - warm_calls,
        len(cache),
    )
