"""``emu pretrain``, ``emu quality-tune`` and ``emu generate``."""

from __future__ import annotations

from pathlib import Path

import click

from emu_cli.cli.options import (
    MODEL_HELP,
    POSITIVE,
    can_push_after_training,
    config_option,
    device_option,
    key_values,
    mixed_precision_option,
    print_recipe_option,
    push_after_training,
    recipe_layers,
    report_to_option,
    resume_option,
    run,
    sampling_steps_option,
    seed_option,
    validation_options,
)
from emu_cli.plugin import registry as plugins
from emu_cli.plugin.backend import PRESETS
from emu_cli.training.recipe import Recipe  # dataclasses only: keeps --help fast


@click.command()
@click.option("--backend", "backend_name", required=True, help="Model family (see `emu backends`).")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Image folder with metadata.jsonl, or WebDataset .tar shards.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder.")
@click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="small",
    show_default=True,
    help="Model size: tiny (tests), small (CPU), base (GPU).",
)
@click.option("--stage", "stages", multiple=True, help="Train only these stages (repeatable).")
@click.option("--steps", type=int, help="Steps per stage (overrides the preset).")
@click.option("--batch-size", type=int, help="Batch size per process.")
@click.option("--learning-rate", "--lr", "learning_rate", type=float, help="Peak learning rate.")
@click.option("--noise-offset", type=float, help="Noise offset (diffusion backends).")
@click.option("--checkpoint-every", type=int, help="Write a resumable checkpoint every N steps.")
@click.option("--preview-every", type=int, help="Write a preview grid every N steps.")
@click.option(
    "--validate-every",
    type=click.IntRange(min=1),
    help="Every N steps of the stage that generates, judge images of the validation prompts "
    "and add them to its curve (curve.json, curve.png); it never stops training.",
)
@validation_options
@mixed_precision_option
@report_to_option
@click.option("--text-encoder", help="Pretrained text encoder: hub name or local folder.")
@click.option(
    "--option",
    "model_options",
    multiple=True,
    help="Backend option KEY=VALUE (repeatable), e.g. superres_factor=2; see docs/backends.md.",
)
@seed_option
@resume_option
@click.option("--push-to-hub", "push_to_hub", help="OWNER/NAME: push the result when done.")
@device_option
@print_recipe_option
@config_option(extra_keys=Recipe.field_names() | {"stages_recipe", "model_options"})
@click.pass_context
def pretrain(
    ctx: click.Context,
    print_recipe: bool,
    backend_name: str,
    data: Path,
    out: Path,
    preset: str,
    stages: tuple[str, ...],
    text_encoder: str | None,
    model_options: tuple[str, ...],
    seed: int,
    resume: str | None,
    push_to_hub: str | None,
    device: str,
    validate_every: int | None,
    validation_sampling_steps: int,
    judge: str | None,
    validation_max_prompts: int | None,
    validation_prompts: str | None,
    **overrides,
) -> None:
    """Pre-train a backend's model from scratch, stage by stage.

    Recipe fields not offered as options (warmup_steps, ema_decay, resolution_schedule, ...)
    can be set in the --config file; a `stages_recipe:` mapping sets them per stage.
    """
    from emu_cli.training.pretrain import pretrain as run_pretrain
    from emu_cli.training.pretrain import pretraining_recipes
    from emu_cli.training.validation import ValidationSettings

    backend = plugins.get_backend(backend_name)
    extra = dict(ctx.meta.get("config", {}))
    per_stage = extra.pop("stages_recipe", {}) or {}
    options = {**(extra.pop("model_options", {}) or {}), **key_values(model_options, "--option")}
    if text_encoder:
        options["text_encoder"] = text_encoder
    layers = recipe_layers(ctx, extra, {**overrides, "seed": seed})
    if print_recipe:
        recipes = run(
            lambda: pretraining_recipes(
                backend, preset, list(stages) or None, layers, per_stage, options
            )
        )
        for name, resolved in recipes.items():
            click.echo(f"stage {name}\n{resolved.table()}\n")
        return
    can_push_after_training(push_to_hub)
    validation = ValidationSettings(
        judge=judge,
        prompts=validation_prompts,
        validate_every=validate_every,
        max_prompts=validation_max_prompts,
        sample_steps=validation_sampling_steps,
    )
    result = run(
        lambda: run_pretrain(
            backend,
            data=data,
            out=out,
            preset=preset,
            stages=list(stages) or None,
            overrides=layers,
            per_stage=per_stage,
            options=options,
            device=device,
            resume=resume,
            validation=validation,
        )
    )
    for stage in result.stages:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in stage.metrics.items())
        click.echo(
            f"{stage.stage}: {stage.steps} steps, loss {stage.final_loss:.4f}, "
            f"{stage.images_per_second:.1f} images/s" + (f", {metrics}" if metrics else "")
        )
    click.echo(f"checkpoint: {out}")
    push_after_training(out, push_to_hub)


@click.command()
@click.option(
    "--model", "model_path", metavar="MODEL", required=True, help=f"The checkpoint: {MODEL_HELP}."
)
@click.argument("prompts", nargs=-1)
@click.option(
    "--prompts",
    "prompt_set",
    help="Also the prompts of a file (.txt, or .jsonl with prompt and tags) or builtin:NAME, "
    "as `emu evaluate` reads them.",
)
@click.option(
    "-n",
    "--images-per-prompt",
    "num_images",
    type=POSITIVE,
    default=4,
    show_default=True,
    help="Images per prompt.",
)
@sampling_steps_option
@click.option(
    "--guidance", type=float, help="Classifier-free guidance scale [default: the backend's]."
)
@seed_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("samples"),
    show_default=True,
    help="Output folder; outputs of an earlier run there are replaced.",
)
@device_option
@config_option()
def generate(
    model_path: str,
    prompts: tuple[str, ...],
    prompt_set: str | None,
    num_images: int,
    sampling_steps: int,
    guidance: float | None,
    seed: int,
    out: Path,
    device: str,
) -> None:
    """Generate images for PROMPTS (and --prompts): PNG files, a grid, and index.json."""
    from emu_cli.evaluate.prompts import load_prompts
    from emu_cli.generate import generate as run_generate

    listed = list(prompts)
    if prompt_set is not None:
        listed += [p.text for p in run(lambda: load_prompts(prompt_set))]
    if not listed:
        raise click.UsageError("no prompts: give PROMPTS, --prompts FILE|builtin:NAME or both")
    written = run(
        lambda: run_generate(
            model_path,
            listed,
            num_images=num_images,
            steps=sampling_steps,
            guidance=guidance,
            seed=seed,
            out=out,
            device=device,
        )
    )
    click.echo(f"wrote {len(written.images)} images and {written.grid} to {out}")


@click.command(name="quality-tune")
@click.option(
    "--model",
    "model_path",
    metavar="MODEL",
    required=True,
    help=f"The pre-trained checkpoint: {MODEL_HELP}.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="The curated set: image folder with metadata.jsonl, or WebDataset shards.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder.")
@click.option("--steps", type=int, help="Iteration cap (default per preset: 15K at base).")
@click.option("--batch-size", type=int, help="Batch size per process (default 64).")
@click.option("--learning-rate", "--lr", "learning_rate", type=float, help="Peak learning rate.")
@click.option("--noise-offset", type=float, help="Diffusion backends (default 0.1).")
@mixed_precision_option
@report_to_option
@click.option("--subset", "subset_size", type=int, help="Tune on N random curated images only.")
@click.option(
    "--early-stopping/--no-early-stopping",
    default=True,
    show_default=True,
    help="Judge generations every --validate-every steps; keep the best; stop when it stalls.",
)
@click.option("--validate-every", type=int, help="Steps between validations (default per preset).")
@validation_options
@click.option(
    "--patience",
    type=POSITIVE,
    default=3,
    show_default=True,
    help="Validations without a better step before training stops.",
)
@click.option(
    "--appeal-window",
    type=POSITIVE,
    default=2,
    show_default=True,
    help="Validations whose mean appeal a step is judged on: one high reading is noise.",
)
@click.option(
    "--faithfulness-margin",
    type=click.FloatRange(min=0),
    default=0.1,
    show_default=True,
    help="How far faithfulness may fall below the start's before a step is not chosen.",
)
@device_option
@resume_option
@click.option("--push-to-hub", "push_to_hub", help="OWNER/NAME: push the result when done.")
@print_recipe_option
@config_option(extra_keys=Recipe.field_names())
@click.pass_context
def quality_tune(
    ctx: click.Context,
    print_recipe: bool,
    model_path: str,
    data: Path,
    out: Path,
    subset_size: int | None,
    early_stopping: bool,
    validate_every: int | None,
    validation_sampling_steps: int,
    patience: int,
    appeal_window: int,
    faithfulness_margin: float,
    judge: str | None,
    validation_max_prompts: int | None,
    validation_prompts: str | None,
    device: str,
    resume: str | None,
    push_to_hub: str | None,
    **recipe_options,
) -> None:
    """Quality-tune a pre-trained model on a small curated set with the paper's recipe
    (batch 64, noise offset 0.1, constant small learning rate, EMA, early stopping)."""
    from emu_cli.training.quality_tune import EarlyStoppingSettings, quality_tune, tuning_recipe

    layers = recipe_layers(ctx, dict(ctx.meta.get("config", {})), recipe_options)
    if print_recipe:
        click.echo(run(lambda: tuning_recipe(model_path, layers)).table())
        return
    can_push_after_training(push_to_hub)

    settings = EarlyStoppingSettings(
        enabled=early_stopping,
        judge=judge,
        prompts=validation_prompts,
        validate_every=validate_every,
        max_prompts=validation_max_prompts,
        patience=patience,
        window=appeal_window,
        faithfulness_margin=faithfulness_margin,
        sample_steps=validation_sampling_steps,
    )
    result = run(
        lambda: quality_tune(
            model_path,
            data=data,
            out=out,
            overrides=layers,
            early_stopping=settings,
            subset_size=subset_size,
            device=device,
            resume=resume,
        )
    )
    stopped = f", stopped early: {result.stopped_early}" if result.stopped_early else ""
    click.echo(
        f"quality-tuned {result.steps} steps; chosen step {result.chosen_step}{stopped}; "
        f"encoder calls while training: {result.encoder_calls}"
    )
    click.echo(f"checkpoint: {out}")
    push_after_training(out, push_to_hub)
