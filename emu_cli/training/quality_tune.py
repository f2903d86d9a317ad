"""``emu quality-tune``: the paper's supervised fine-tuning of a pre-trained model on a small,
curated, very appealing set. One recipe for every backend, here and nowhere else.

The paper (stage 5): batch 64, noise offset 0.1, at most 15K iterations, stopped early on
purpose while the loss still fell, since longer training on so few images overfits. It gives
no learning rate; ours is a small constant rate after a short warm-up, with an EMA of the
weights, a documented and configurable default. The iteration cap scales with the preset.

The early stopping the paper did by hand is done here by :class:`GenerationMonitor`: a fixed
prompt set is generated and judged every ``validate_every`` steps, the best checkpoint is kept
and becomes the result, and training stops when appeal stops rising or faithfulness falls.

It runs in one run folder (:class:`~emu_cli.training.session.TrainingSession`): the chosen
model, and ``stages/quality-tune/`` with the curve, the validations' images and ``best/``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emu_cli.checkpoint.folder import PROVENANCE, load_checkpoint, locate_checkpoint
from emu_cli.checkpoint.provenance import Provenance, QualityTuningRecord
from emu_cli.data.sources import SampleIndex, index_dataset
from emu_cli.errors import EmuError
from emu_cli.plugin.backend import Backend
from emu_cli.runtime import quiet_libraries
from emu_cli.training.plan import ImageSides, run_plan
from emu_cli.training.resolution import (
    QT_PRESETS,
    Layer,
    ResolvedRecipe,
    quality_tuning_recipe,
)
from emu_cli.training.session import (
    TrainingSession,
    data_record,
    report_index,
)
from emu_cli.training.validation import ValidationSettings

log = logging.getLogger("emu")

STAGE_FOLDER = "quality-tune"


@dataclass
class EarlyStoppingSettings(ValidationSettings):
    """The validation (``validate_every`` defaults per preset: ``QT_PRESETS``) and the rule."""

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


def tuning_recipe(model_path: str | Path, overrides: Sequence[Layer] = ()) -> ResolvedRecipe:
    """The quality-tuning recipe for the model at ``model_path`` (``--print-recipe``): read
    from its record, without loading its weights."""
    from emu_cli.checkpoint.folder import checkpoint_provenance
    from emu_cli.plugin.registry import get_backend

    parent = checkpoint_provenance(locate_checkpoint(model_path).path)
    return _recipe_for(get_backend(parent.backend), parent, model_path, overrides)


def _recipe_for(
    backend: Backend, parent: Provenance, model_path: str | Path, overrides: Sequence[Layer]
) -> ResolvedRecipe:
    """The recipe for tuning a model with record ``parent``, which must have pre-trained its
    generator."""
    stage = backend.generator_stage()
    if stage not in parent.stages_completed:
        raise EmuError(
            f"'{model_path}' has not completed stage '{stage}' of backend '{backend.name}', "
            "the stage quality-tuning fine-tunes; pre-train it first"
        )
    return quality_tuning_recipe(backend, parent.preset, parent.recipes.get(stage, {}), overrides)


def subset(index: SampleIndex, count: int | None, seed: int) -> SampleIndex:
    """``count`` samples drawn at random (seeded): the paper's data-size ablation."""
    if count is None or count >= len(index.samples):
        return index
    if count < 1:
        raise EmuError(f"--subset must be >= 1, got {count}")
    import numpy as np

    chosen = sorted(np.random.default_rng([seed, 100]).choice(len(index.samples), count, False))
    return SampleIndex(index.source, [index.samples[i] for i in chosen], index.rejected)


def _not_quality_tuning(saved: Provenance | None) -> str | None:
    """Why ``--resume PATH`` cannot continue quality-tuning: not a checkpoint of it (e.g. a
    pre-training checkpoint holds another stage's optimizer state)."""
    if saved is not None and STAGE_FOLDER in saved.recipes:
        return None
    return (
        f"is not a quality-tuning checkpoint (a folder stages/{STAGE_FOLDER}/checkpoints/step-N "
        "of a quality-tuning run, or 'latest')"
    )


def quality_tune(
    model_path: str | Path,
    *,
    data: Path,
    out: Path,
    overrides: Sequence[Layer] = (),
    early_stopping: EarlyStoppingSettings | None = None,
    subset_size: int | None = None,
    device: str = "auto",
    resume: str | None = None,
) -> QualityTuneResult:
    from emu_cli.checkpoint.folder import checkpoint_provenance
    from emu_cli.data.dataset import TrainingDataset, image_sizes
    from emu_cli.judges.spec import trained_on_world
    from emu_cli.training.cache import EncodingCache
    from emu_cli.training.early_stopping import EarlyStopping
    from emu_cli.training.set_aside import SetAside
    from emu_cli.training.trainer import Trainer, bucket_multiple, training_buckets

    quiet_libraries()
    settings = early_stopping or EarlyStoppingSettings()
    located = locate_checkpoint(model_path)  # a folder, or a Hub repo pinned to its commit
    if settings.enabled:  # before any work: a model of the world alone has default judges
        world = trained_on_world(checkpoint_provenance(located.path))
        settings = settings.resolved(world, "emu quality-tune (early stopping)")
    with TrainingSession(out, resume) as session:
        folder = session.stage_folder(STAGE_FOLDER)
        backend, model, parent = load_checkpoint(located.path)
        stage = backend.generator_stage()
        preset = parent.preset
        recipe = _recipe_for(backend, parent, model_path, overrides).recipe
        index = subset(index_dataset(data, captions_for="quality-tuning"), subset_size, recipe.seed)
        report_index(index)
        # every header of the (small) curated set, read once: the recipe's point is sharp,
        # well-made images, and an upscaled one is neither, so the count is exact and recorded;
        # the aspect buckets read the same sizes
        sizes = image_sizes(index.samples)
        sides = ImageSides.of(sizes, len(index))
        upscaled = sides.smaller_than(recipe.resolution)
        resume_from = session.resume_point(STAGE_FOLDER, _not_quality_tuning)
        changes = None
        if resume_from is not None:
            changes = session.check_resume(resume_from, STAGE_FOLDER, preset, {}, recipe, index)
            log.info(f"resuming quality-tuning from {resume_from}")
            model = load_checkpoint(resume_from / "model", backend)[1]
        accelerator = session.start(device, recipe)
        # frozen text encoders leave memory during the steps; read again from the folder the
        # model came from (they do not change) to sample and save
        source = resume_from / "model" if resume_from is not None else located.path
        set_aside = SetAside(model, backend.encoding_components(model, stage), source)
        validation = None
        if settings.enabled:
            every = settings.validate_every or QT_PRESETS[preset].validate_every
            validation = settings.describe(every)
        run_plan(
            "quality-tune", backend.name, preset, data, index, sides, {STAGE_FOLDER: recipe},
            accelerator, session.out, resume_from=str(resume_from) if resume_from else None,
            validation=validation or "none (--no-early-stopping)",
            set_aside=list(set_aside.names),
        ).announce(session.out, accelerator.is_main_process)  # fmt: skip
        model.to(accelerator.device)

        cache = EncodingCache(backend, batch_size=recipe.batch_size, whole=set_aside.whole)
        multiple = bucket_multiple(backend, model, stage, recipe)
        buckets = training_buckets(sizes, recipe.resolution, multiple)
        view = TrainingDataset(
            index,
            recipe.resolution,
            random_flip=recipe.random_flip,
            caption_dropout=recipe.caption_dropout,
            sizes=buckets.size_of if buckets else None,
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
                backend,
                rule,
                folder,
                seed=recipe.seed,
                default_every=QT_PRESETS[preset].validate_every,
            )
        record = Provenance(
            backend=backend.name,
            preset=preset,
            stages_completed=parent.stages_completed,
            recipes={**parent.recipes, STAGE_FOLDER: recipe.to_dict()},
            data=data_record(index, data, upscaled=upscaled),
            pretraining_data=parent.data,
            parent=located.name,
            parent_repo=located.repo,  # the Hub repo it came from: the card's base_model
            processes=accelerator.num_processes,
            resumed_with_changes=changes,
        )
        trainer = Trainer(
            backend, model, stage, recipe, index, folder, accelerator,
            encode=cache.encode, monitor=monitor, sizes=sizes, set_aside=set_aside,
        )  # fmt: skip
        result = trainer.run(resume_from, record)

        chosen_step, curve = result.steps, None
        best = folder / "best"
        if monitor is not None:
            curve = monitor.rule.to_dict()
            chosen_step = monitor.rule.best_step
            if (best / PROVENANCE).is_file():
                model = load_checkpoint(best, backend)[1]
        provenance = record.with_changes(
            stage=STAGE_FOLDER,
            steps={**parent.steps, STAGE_FOLDER: chosen_step},
            step=chosen_step,
            quality_tuning=QualityTuningRecord(
                stage=stage,
                steps_trained=result.steps,
                chosen_step=chosen_step,
                stopped_early=result.stopped_early,
                judge=settings.judge if monitor else None,
                curve=curve,
                encoder_calls_while_training=cache.encoder_calls - warm_calls,
                cached_rows=len(cache),
            ),
        )
        session.save(backend, model, provenance)
        return QualityTuneResult(
            session.out,
            result.steps,
            chosen_step,
            result.stopped_early,
            cache.encoder_calls - warm_calls,
            len(cache),
        )
