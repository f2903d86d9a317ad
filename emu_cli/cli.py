"""The ``emu`` command line. Thin: each command parses options and calls into the library.

Heavy modules (torch, diffusers, the models) are imported inside commands, so ``emu --help`` and
``emu backends`` answer at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from emu_cli import __version__, plugins
from emu_cli.config import config_option, load_yaml
from emu_cli.training.recipe import Recipe  # dataclasses only: keeps --help fast


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="emu")
def cli() -> None:
    """emu: pre-train, curate, quality-tune, generate and evaluate text-to-image models
    with the Emu quality-tuning recipe."""


# counts, steps and sizes a command cannot use at zero: refused by click, naming the option
POSITIVE = click.IntRange(min=1)
MODEL_HELP = "a folder, or a Hub model repo OWNER/NAME[@REVISION] (downloaded and cached)"


def device_option(function):
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where to run; auto picks CUDA when available.",
    )(function)


def resume_option(function):
    return click.option(
        "--resume",
        help="'latest' to continue the run in --out, or a checkpoint folder "
        "(stages/STAGE/checkpoints/step-N); with the settings the run started with.",
    )(function)


def mixed_precision_option(function):
    return click.option(
        "--mixed-precision",
        type=click.Choice(["no", "fp16", "bf16"]),
        help="Autocast precision for training; bf16 also speeds up CPUs that support it.",
    )(function)


def validation_options(function):
    """How a validation generates and who judges it: shared by pre-training, which records the
    curve, and quality-tuning, which stops early on it."""
    function = click.option(
        "--validation-prompts",
        default="builtin:validation",
        show_default=True,
        help="Prompt file or builtin:NAME generated at each validation.",
    )(function)
    function = click.option(
        "--judge", default="world", show_default=True, help="A registered judge."
    )(function)
    return click.option(
        "--validation-steps", type=POSITIVE, default=20, show_default=True, help="Sampling steps."
    )(function)


@cli.command()
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
    type=click.Choice(["tiny", "small", "base"]),
    default="small",
    show_default=True,
    help="Model size: tiny (tests), small (CPU), base (GPU).",
)
@click.option("--stage", "stages", multiple=True, help="Train only these stages (repeatable).")
@click.option("--steps", type=int, help="Steps per stage (overrides the preset).")
@click.option("--batch-size", type=int, help="Batch size per process.")
@click.option("--learning-rate", "--lr", "learning_rate", type=float)
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
@click.option("--text-encoder", help="Pretrained text encoder: hub name or local folder.")
@click.option(
    "--option",
    "model_options",
    multiple=True,
    help="Backend option KEY=VALUE (repeatable), e.g. superres_factor=2; see docs/backends.md.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@resume_option
@click.option("--push-to-hub", "push_to_hub", help="OWNER/NAME: push the result when done.")
@device_option
@config_option(extra_keys=Recipe.field_names() | {"stages_recipe", "model_options"})
@click.pass_context
def pretrain(
    ctx: click.Context,
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
    validation_steps: int,
    judge: str,
    validation_prompts: str,
    **overrides,
) -> None:
    """Pre-train a backend's model from scratch, stage by stage.

    Recipe fields not offered as options (warmup_steps, ema_decay, resolution_schedule, ...)
    can be set in the --config file; a `stages_recipe:` mapping sets them per stage.
    """
    from emu_cli.pretrain import pretrain as run_pretrain
    from emu_cli.training.validation import ValidationSettings

    _can_push_after_training(push_to_hub)
    backend = plugins.get_backend(backend_name)
    validation = ValidationSettings(
        judge=judge,
        prompts=validation_prompts,
        validate_every=validate_every,
        sample_steps=validation_steps,
    )
    extra = dict(ctx.meta.get("config", {}))
    per_stage = extra.pop("stages_recipe", {}) or {}
    options = {**(extra.pop("model_options", {}) or {}), **_key_values(model_options, "--option")}
    if text_encoder:
        options["text_encoder"] = text_encoder
    result = _run(
        lambda: run_pretrain(
            backend,
            data=data,
            out=out,
            preset=preset,
            stages=list(stages) or None,
            recipe_overrides={**extra, **overrides, "seed": seed},
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
    _push_after_training(out, push_to_hub)


def _key_values(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict, values read as YAML scalars (2, 0.5, true, text)."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=flag)
        result[key.strip()] = load_yaml(value)
    return result


@cli.command()
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
    "-n", "--num-images", type=POSITIVE, default=4, show_default=True, help="Images per prompt."
)
@click.option("--steps", type=POSITIVE, default=25, show_default=True, help="Sampling steps.")
@click.option(
    "--guidance", type=float, help="Classifier-free guidance scale [default: the backend's]."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("samples"), show_default=True)
@device_option
@config_option()
def generate(
    model_path: str,
    prompts: tuple[str, ...],
    prompt_set: str | None,
    num_images: int,
    steps: int,
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
        listed += [p.text for p in _run(lambda: load_prompts(prompt_set))]
    if not listed:
        raise click.UsageError("no prompts: give PROMPTS, --prompts FILE|builtin:NAME or both")
    written = _run(
        lambda: run_generate(
            model_path,
            listed,
            num_images=num_images,
            steps=steps,
            guidance=guidance,
            seed=seed,
            out=out,
            device=device,
        )
    )
    click.echo(f"wrote {len(written.images)} images and {written.grid} to {out}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backends(as_json: bool) -> None:
    """List installed backend plugins with their distribution and version."""
    infos = plugins.plugin_infos()
    descriptions = {name: b.description for name, b in plugins.get_backends().items()}
    filter_descriptions = {name: f.description for name, f in plugins.get_filters().items()}
    judge_descriptions = {name: j.description for name, j in plugins.get_judges().items()}
    failures = plugins.load_failures()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "plugins": [info.__dict__ for info in infos],
                    "backends": descriptions,
                    "failed": [failure.__dict__ for failure in failures],
                },
                indent=2,
            )
        )
        return
    if not infos and not failures:
        click.echo("no plugins installed")
    for info in infos:
        version = f" {info.version}" if info.version else ""
        click.echo(f"{info.name} ({info.distribution or 'registered in-process'}{version})")
        for name in info.backends:
            click.echo(f"  backend {name}: {descriptions.get(name, '')}")
        for name in info.filters:
            click.echo(f"  filter {name}: {filter_descriptions.get(name, '')}")
        for name in info.judges:
            click.echo(f"  judge {name}: {judge_descriptions.get(name, '')}")
    for failure in failures:
        click.echo(f"{failure.name}: FAILED to load: {failure.error}")


@cli.group()
def data() -> None:
    """Make and inspect datasets."""


@data.command()
@click.option("--n", "count", type=int, required=True, help="Number of image-caption pairs.")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=int, default=64, show_default=True, help="Image side in pixels.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["imagefolder", "webdataset"]),
    default="imagefolder",
    show_default=True,
)
@click.option("--workers", type=POSITIVE, help="Processes drawing images (default: all cores).")
@click.option(
    "--clean",
    is_flag=True,
    help="No junk and only well-made pictures (large, sharp subject): what a generator can "
    "learn without the pool's noise.",
)
def synth(
    count: int, out: Path, seed: int, size: int, format_: str, workers: int | None, clean: bool
) -> None:
    """Write the built-in world's image-caption pairs (deterministic for a seed)."""
    from emu_cli.world.synth import synthesize

    _run(
        lambda: synthesize(
            count, out, seed=seed, size=size, format=format_, workers=workers, clean=clean
        )
    )
    click.echo(f"wrote {count} {'clean ' if clean else ''}samples to {out} ({format_})")


@data.command(name="train-judges")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Weights file (.safetensors); a .json with its record goes beside it.",
)
@click.option("--samples", type=int, default=90_000, show_default=True)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def train_judges(out: Path, samples: int, epochs: int, seed: int) -> None:
    """Train the world's pixel judges (appeal and faithfulness) on rendered scenes.

    Deterministic for a seed. The weights shipped in emu_cli/world/weights/ were made by this
    command with its defaults."""
    from emu_cli.world.judges import train_judges as run

    record = _run(lambda: run(out, samples=samples, epochs=epochs, seed=seed))
    click.echo(f"wrote {out} ({record['seconds']} s)")


@data.command(name="rate")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="The pool.")
@click.option("--n", "count", type=int, default=2000, show_default=True, help="Images to rate.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
def rate(data: Path, count: int, out: Path, seed: int) -> None:
    """Simulated 1-10 ratings of a random subset of a pool, as AVA's (JSON lines)."""
    from emu_cli.curate.offline_models import write_ratings
    from emu_cli.world.annotators import rate_pool

    ratings = _run(lambda: rate_pool(data, count, seed=seed))
    _run(lambda: write_ratings(ratings, out))
    click.echo(f"wrote {len(ratings)} ratings to {out}")


@data.command(name="simulate-review")
@click.option(
    "--data", type=click.Path(path_type=Path), required=True, help="The images to review."
)
@click.option(
    "--stage",
    type=click.Choice(["generalist", "specialist"]),
    required=True,
    help="generalist: recall; specialist: precision with the guideline checklist.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Kept image folder.")
@click.option(
    "--store",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Annotation database (default: annotations.sqlite beside --out).",
)
@click.option("--keep-rate", type=float, default=0.1, show_default=True)
@click.option("--annotators", type=POSITIVE, default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def simulate_review(
    data: Path,
    stage: str,
    out: Path,
    store: Path | None,
    keep_rate: float,
    annotators: int,
    seed: int,
) -> None:
    """One human filtering stage done by the world's simulated annotators; their decisions go
    to the review app's database and what they keep to an image folder."""
    from emu_cli.curate.human import simulate_stage

    result = _run(
        lambda: simulate_stage(
            data, out, stage=stage, store_path=store or out.parent / "annotations.sqlite",
            keep_rate=keep_rate, annotators=annotators, seed=seed,
        )
    )  # fmt: skip
    click.echo(f"{stage}s kept {result.kept} of {result.seen} images: {out}")


@data.command(name="judge")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--caption", help="Also judge whether each image shows what this caption says.")
@click.option(
    "--weights", type=click.Path(dir_okay=False), help="Judge weights (default: shipped)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def judge(images: tuple[str, ...], caption: str | None, weights: str | None, as_json: bool) -> None:
    """Score IMAGES with the world's pixel judges: appeal per guideline category."""
    from PIL import Image

    from emu_cli.world.factors import CATEGORIES
    from emu_cli.world.judges import ATTRIBUTES, WorldJudges, parse_caption

    if caption is not None and not any(parse_caption(caption).values()):
        raise click.BadParameter(
            f"{caption!r} names no subject, color or background of the world, so nothing "
            f"can be judged against it (subjects: {', '.join(ATTRIBUTES['subject'])})",
            param_hint="--caption",
        )
    pictures = []
    for path in images:
        try:
            with Image.open(path) as image:
                pictures.append(image.convert("RGB"))
        except OSError as error:  # PIL's UnidentifiedImageError included
            raise click.BadParameter(
                f"'{path}' is not an image: {error}", param_hint="IMAGES"
            ) from error
    judges = WorldJudges.load(Path(weights) if weights else None)
    judgement = judges.judge(pictures)
    faithful = judges.faithfulness(pictures, [caption] * len(pictures)) if caption else None
    rows = []
    for i, path in enumerate(images):
        row = {
            "image": path,
            "appeal": round(float(judgement.appeal[i]), 3),
            "categories": {
                c: round(float(v), 3)
                for c, v in zip(CATEGORIES, judgement.categories[i], strict=True)
            },
            **{k: v[i] for k, v in judgement.attributes.items()},
        }
        if faithful is not None:
            row["faithful"] = {k: bool(v[i]) for k, v in faithful.items()}
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        scores = " ".join(f"{k} {v:.2f}" for k, v in row["categories"].items())
        seen = f"{row['color']} {row['subject']} on {row['background']}"
        line = f"{row['image']}: appeal {row['appeal']:.2f} ({scores}); shows a {seen}"
        if faithful is not None:
            wrong = [k for k in ATTRIBUTES if not row["faithful"][k]]
            line += "; " + (f"not the caption's {', '.join(wrong)}" if wrong else "as captioned")
        click.echo(line)


def _filter_settings(
    ctx: click.Context, names: str | None, settings: tuple[str, ...], clip_model: str | None
) -> list:
    """Filters to run, in order, with options: config file's `filters:`, then --filters and
    --set NAME.OPTION=VALUE."""
    from emu_cli.curate.builtin import DEFAULT_ORDER
    from emu_cli.curate.pipeline import FilterSpec

    configured = ctx.meta.get("config", {}).get("filters")
    if configured is not None and not isinstance(configured, dict):
        raise click.BadParameter("`filters:` in the config must map filter names to options")
    if names:
        chosen = {n.strip(): {} for n in names.split(",") if n.strip()}
    elif configured is not None:
        chosen = {}
    else:  # the defaults that can run with what was given
        chosen = {n: {} for n in DEFAULT_ORDER if clip_model or n in ("size", "duplicates", "ocr")}
        chosen.pop("aesthetic", None)
    for name, options in (configured or {}).items():
        if not names or name in chosen:
            chosen[name] = dict(options or {})
    for target, value in _key_values(settings, "--set").items():
        name, dot, option = target.partition(".")
        if not (dot and name and option):
            raise click.BadParameter(f"'{target}' is not NAME.OPTION", param_hint="--set")
        chosen.setdefault(name, {})[option] = value
    return [FilterSpec(name, options) for name, options in chosen.items()]


@cli.group(name="filter", invoke_without_command=True)
@click.option(
    "--data", type=click.Path(path_type=Path), help="Pool: image folder or WebDataset shards."
)
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (resumes if unfinished).")
@click.option("--filters", "names", help="Comma-separated filters, in order (default: all usable).")
@click.option(
    "--set", "settings", multiple=True, help="Filter option, e.g. clip_score.keep_fraction=0.3."
)
@click.option("--clip-model", help="open_clip name, hf-hub:/local-dir: id, or a train-clip folder.")
@click.option("--clip-pretrained", help="open_clip pretrained tag or file, e.g. openai.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--workers", type=POSITIVE, help="Local worker processes (default: all cores).")
@click.option("--chunk-size", type=POSITIVE, default=256, show_default=True)
@device_option
@config_option(extra_keys={"filters"})
@click.pass_context
def filter_group(
    ctx: click.Context,
    data: Path | None,
    out: Path | None,
    names: str | None,
    settings: tuple[str, ...],
    clip_model: str | None,
    clip_pretrained: str | None,
    engine: str,
    workers: int | None,
    chunk_size: int,
    device: str,
) -> None:
    """Automatic curation: run a pool through the filters (size, duplicates, OCR, CLIP score,
    aesthetic score, concept balance, and any a plugin adds).

    Writes OUT/manifest.parquet (every sample, its scores, the first filter it failed),
    OUT/kept (image folder with metadata.jsonl) and OUT/report (funnel.png, index.html).
    Run it again on the same OUT to resume. Filter options and thresholds (min, max or
    keep_fraction) come from the --config file's `filters:` mapping or from --set.
    """
    if ctx.invoked_subcommand is not None:
        return
    if data is None or out is None:
        raise click.UsageError("emu filter needs --data and --out (or a subcommand)")
    from emu_cli.curate.pipeline import FilterRun
    from emu_cli.curate.resources import Resources

    specs = _filter_settings(ctx, names, settings, clip_model)
    resources = Resources(clip_model, clip_pretrained, "cpu" if device == "auto" else device)
    run = _run(
        lambda: FilterRun(
            data, out, specs, resources, engine=engine, workers=workers, chunk_size=chunk_size
        )
    )
    click.echo("filters: " + ", ".join(f.name for f in run.filters))
    outcome = _run(run.run)
    rejected = ", ".join(f"{k} {v}" for k, v in outcome.rejected_by.items() if k)
    click.echo(f"kept {outcome.kept} of {outcome.total} ({rejected or 'none rejected'})")
    click.echo(
        f"kept set: {out / 'kept'}; manifest: {out / 'manifest.parquet'}; "
        f"report: {out / 'report' / 'index.html'}"
    )


@filter_group.command(name="train-models")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="The pool.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Models folder.")
@click.option("--clip-steps", type=int, default=1000, show_default=True)
@click.option("--clip-batch-size", type=int, default=128, show_default=True)
@click.option("--rated", type=int, default=2000, show_default=True, help="Images to rate.")
@click.option("--seed", type=int, default=0, show_default=True)
def train_models(
    data: Path, out: Path, clip_steps: int, clip_batch_size: int, rated: int, seed: int
) -> None:
    """All `emu filter` needs offline, from the pool itself: train-clip, then simulated
    ratings, then train-aesthetic. Parts already in OUT are kept."""
    from emu_cli.curate.offline_models import train_offline_models

    models = _run(
        lambda: train_offline_models(
            data, out, clip_steps=clip_steps, clip_batch_size=clip_batch_size, rated=rated,
            seed=seed,
        )
    )  # fmt: skip
    click.echo(f"--clip-model {models.clip} --set aesthetic.weights={models.aesthetic}")


@filter_group.command(name="train-clip")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="The pool.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model folder.")
@click.option("--steps", type=int, default=1000, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def train_clip(data: Path, out: Path, steps: int, batch_size: int, seed: int) -> None:
    """Train a small CLIP on the pool's own pairs (offline stand-in for a pretrained one).

    The folder is in open_clip's layout: pass it as --clip-model to `emu filter`."""
    from emu_cli.curate.clip import train_clip as run

    record = _run(lambda: run(data, out, steps=steps, batch_size=batch_size, seed=seed))
    click.echo(
        f"wrote {out} (loss {record['final_loss']}, {record['passes']} passes over the data, "
        f"{record['seconds']} s)"
    )


@filter_group.command(name="train-aesthetic")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="The rated pool.")
@click.option(
    "--ratings",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help='JSON lines {"key": SAMPLE KEY, "rating": 1-10}, e.g. from `emu data rate`.',
)
@click.option("--clip-model", required=True, help="The CLIP model the head will read.")
@click.option("--clip-pretrained")
@click.option("--out", type=click.Path(path_type=Path), required=True, help=".safetensors file.")
@click.option("--seed", type=int, default=0, show_default=True)
def train_aesthetic(
    data: Path,
    ratings: Path,
    clip_model: str,
    clip_pretrained: str | None,
    out: Path,
    seed: int,
) -> None:
    """Train a LAION-style aesthetic head on CLIP image embeddings from a ratings file."""
    from emu_cli.curate.aesthetic import train_aesthetic as run
    from emu_cli.curate.clip import ClipEncoder

    clip = _run(lambda: ClipEncoder.load(clip_model, clip_pretrained))
    record = _run(lambda: run(data, ratings, clip, out, seed=seed))
    click.echo(
        f"wrote {out}: validation Spearman {record['validation_spearman']} on "
        f"{record['validation_samples']} held-out of {record['rated_samples']} rated samples"
    )
    if record["keys_not_in_pool"]:
        click.echo(
            f"left out {record['keys_not_in_pool']} rated keys that are not samples of {data} "
            f"(first: {', '.join(record['keys_not_in_pool_first'])})",
            err=True,
        )


@cli.command(name="quality-tune")
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
@click.option("--learning-rate", "--lr", "learning_rate", type=float)
@click.option("--noise-offset", type=float, help="Diffusion backends (default 0.1).")
@mixed_precision_option
@click.option("--subset", "subset_size", type=int, help="Tune on N random curated images only.")
@click.option(
    "--early-stopping/--no-early-stopping",
    default=True,
    show_default=True,
    help="Judge generations every --validate-every steps; keep the best; stop when it stalls.",
)
@click.option("--validate-every", type=int, help="Steps between validations (default per preset).")
@validation_options
@click.option("--patience", type=POSITIVE, default=3, show_default=True)
@click.option(
    "--appeal-window",
    type=POSITIVE,
    default=2,
    show_default=True,
    help="Validations whose mean appeal a step is judged on: one high reading is noise.",
)
@click.option("--faithfulness-margin", type=click.FloatRange(min=0), default=0.1, show_default=True)
@device_option
@resume_option
@click.option("--push-to-hub", "push_to_hub", help="OWNER/NAME: push the result when done.")
@config_option(extra_keys=Recipe.field_names())
@click.pass_context
def quality_tune(
    ctx: click.Context,
    model_path: str,
    data: Path,
    out: Path,
    subset_size: int | None,
    early_stopping: bool,
    validate_every: int | None,
    validation_steps: int,
    patience: int,
    appeal_window: int,
    faithfulness_margin: float,
    judge: str,
    validation_prompts: str,
    device: str,
    resume: str | None,
    push_to_hub: str | None,
    **recipe_options,
) -> None:
    """Quality-tune a pre-trained model on a small curated set with the paper's recipe
    (batch 64, noise offset 0.1, constant small learning rate, EMA, early stopping)."""
    from emu_cli.quality_tune import EarlyStoppingSettings
    from emu_cli.quality_tune import quality_tune as run

    _can_push_after_training(push_to_hub)

    settings = EarlyStoppingSettings(
        enabled=early_stopping,
        judge=judge,
        prompts=validation_prompts,
        validate_every=validate_every,
        patience=patience,
        window=appeal_window,
        faithfulness_margin=faithfulness_margin,
        sample_steps=validation_steps,
    )
    result = _run(
        lambda: run(
            model_path,
            data=data,
            out=out,
            recipe_overrides={**ctx.meta.get("config", {}), **recipe_options},
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
    _push_after_training(out, push_to_hub)


@cli.command()
@click.option("--a", "model_a", metavar="MODEL", required=True, help=f"Model A: {MODEL_HELP}.")
@click.option("--b", "model_b", metavar="MODEL", required=True, help=f"Model B: {MODEL_HELP}.")
@click.option(
    "--prompts",
    default="builtin:world",
    show_default=True,
    help="Prompt file (.txt, or .jsonl with prompt and tags) or builtin:NAME.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results folder.")
@click.option(
    "--annotators",
    type=click.Choice(["simulated", "review"]),
    default="simulated",
    show_default=True,
    help="simulated: the world's panel votes; review: people vote in `emu review OUT`.",
)
@click.option("--images-per-prompt", type=POSITIVE, default=1, show_default=True)
@click.option("--steps", type=POSITIVE, default=25, show_default=True, help="Sampling steps.")
@click.option(
    "--guidance",
    type=float,
    help="Classifier-free guidance scale [default: each model's backend's].",
)
@click.option("--a-guidance", type=float, help="Guidance for model A only [default: --guidance].")
@click.option("--b-guidance", type=float, help="Guidance for model B only [default: --guidance].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--judge", default="world", show_default=True, help="Judge for the proxy scores.")
@click.option("--clip-model", help="open_clip model (name or local folder) for CLIP score.")
@click.option("--clip-pretrained", help="open_clip pretrained tag, with a model name.")
@click.option(
    "--resamples", type=POSITIVE, default=1000, show_default=True, help="Bootstrap draws."
)
@click.option("--json", "as_json", is_flag=True, help="Print results.json.")
@device_option
@config_option()
def evaluate(
    model_a: str,
    model_b: str,
    prompts: str,
    out: Path,
    annotators: str,
    images_per_prompt: int,
    steps: int,
    guidance: float | None,
    a_guidance: float | None,
    b_guidance: float | None,
    seed: int,
    judge: str,
    clip_model: str | None,
    clip_pretrained: str | None,
    resamples: int,
    as_json: bool,
    device: str,
) -> None:
    """Side-by-side evaluation as the paper's: visual appeal (A / B / Tie, 5 annotators) and
    text faithfulness (A / B / Both / Neither, 3 annotators), with bootstrap intervals."""
    from emu_cli.evaluate.protocol import Settings
    from emu_cli.evaluate.protocol import evaluate as run
    from emu_cli.evaluate.report import PROTOCOL_TITLES, describe

    sides = {side: g for side, g in (("a", a_guidance), ("b", b_guidance)) if g is not None}
    settings = Settings(steps, guidance, seed, images_per_prompt, device, side_guidance=sides)
    results = _run(
        lambda: run(
            model_a, model_b, prompts, out,
            annotators=annotators, settings=settings, judge=judge,
            clip_model=clip_model, clip_pretrained=clip_pretrained, resamples=resamples,
        )
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for protocol, subsets in results["protocols"].items():
        for subset, rate in subsets.items():
            click.echo(f"{PROTOCOL_TITLES[protocol]:18} {subset:7} {describe(rate)}")
    if annotators == "review" and not results["votes"]:
        click.echo(f"no votes yet: run `emu review {out} --stage compare`, then this again")
    click.echo(f"report: {out / 'report.html'}")


@cli.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--stage",
    type=click.Choice(["generalist", "specialist", "caption", "compare"]),
    required=True,
    help="compare: DATA is an `emu evaluate --annotators review` folder.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="0 picks a free one.",
)
@click.option("--annotators", type=POSITIVE, default=1, show_default=True, help="Tokens to issue.")
@click.option(
    "--export",
    "export_to",
    type=click.Path(path_type=Path),
    help="Write what the stage kept (with final captions) to this image folder; no server.",
)
@config_option()
@click.pass_context
def review(
    ctx: click.Context,
    data: Path,
    stage: str,
    host: str,
    port: int,
    annotators: int,
    export_to: Path | None,
) -> None:
    """Web app for the human stages (generalist, specialist, caption) and side-by-side
    evaluation (compare), on a SQLite database shared with the simulated annotators."""
    from emu_cli.review.server import is_loopback, make_server

    if export_to is not None:
        from emu_cli.review.export import export_stage

        count = _run(lambda: export_stage(data, stage, export_to))
        click.echo(f"exported {count} images to {export_to}")
        return
    explicit = ctx.get_parameter_source("host") == click.core.ParameterSource.COMMANDLINE
    if not is_loopback(host) and not explicit:
        raise click.UsageError(f"refusing to listen on {host}: give --host explicitly for that")

    def listening():
        try:
            return make_server(data, stage, host=host, port=port, annotators=annotators)
        except OSError as error:
            if error.filename is not None:  # a file (the database), not the address
                raise
            raise ValueError(
                f"cannot listen on {host}:{port} ({error.strerror}): pass another --port "
                "(0 picks a free one)"
            ) from error

    server, tokens = _run(listening)
    bound = server.server_address[1]
    click.echo(f"emu review ({stage}) serving {data} on http://{host}:{bound}/", err=True)
    for name, token in tokens.items():
        click.echo(f"{name}: http://{host}:{bound}/?token={token}")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.app.close()


@cli.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--repo", required=True, help="OWNER/NAME on the Hub.")
@click.option("--dataset", is_flag=True, help="PATH is a curated image folder: a dataset repo.")
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--revision", help="Branch to commit to (created if needed).")
@click.option("--commit-message", help="Message of the one commit.")
@click.option(
    "--base-model",
    help="Hub id of the model this one was tuned from (card) [default: the Hub repo "
    "`emu quality-tune --model` read it from, if it came from the Hub].",
)
@click.option("--card-dataset", "card_datasets", multiple=True, help="Hub id of a dataset used.")
@click.option(
    "--evaluation",
    type=click.Path(exists=True, path_type=Path),
    help="An `emu evaluate` folder whose table goes in the card.",
)
@click.option(
    "--aesthetic",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With a CLIP folder: an aesthetic head for it, pushed as aesthetic.safetensors.",
)
@click.option("--dry-run", is_flag=True, help="Print the file list and the card; no network.")
def push(
    path: Path,
    repo: str,
    dataset: bool,
    private: bool,
    revision: str | None,
    commit_message: str | None,
    base_model: str | None,
    card_datasets: tuple[str, ...],
    evaluation: Path | None,
    aesthetic: Path | None,
    dry_run: bool,
) -> None:
    """Push a checkpoint or a CLIP folder from `emu filter train-clip` (a model repo) or, with
    --dataset, a curated image folder to the Hugging Face Hub in one commit, with a card that
    carries its provenance. Token from HF_TOKEN or `hf auth login`; endpoint from
    HF_ENDPOINT."""
    from emu_cli.publish.push import plan_dataset, plan_model
    from emu_cli.publish.push import push as run

    if dataset:
        upload = _run(lambda: plan_dataset(path, repo))
    else:
        upload = _run(
            lambda: plan_model(
                path, repo, aesthetic=aesthetic, base_model=base_model,
                datasets=list(card_datasets) or None, evaluation=evaluation,
            )
        )  # fmt: skip
    if dry_run:
        click.echo(upload.describe())
        return
    url = _run(
        lambda: run(upload, private=private, revision=revision, commit_message=commit_message)
    )
    click.echo(f"pushed {path} to {repo}: {url}")


def _can_push_after_training(repo: str | None) -> None:
    """``--push-to-hub`` fails before training, not hours later, when it cannot work."""
    if repo:
        from emu_cli.publish.push import check_can_push

        _run(lambda: check_can_push(repo))


def _push_after_training(out: Path, repo: str | None) -> None:
    """``--push-to-hub``: the finished checkpoint, as `emu push` would."""
    if repo:
        from emu_cli.publish.push import plan_checkpoint
        from emu_cli.publish.push import push as run

        url = _run(lambda: run(plan_checkpoint(out, repo)))
        click.echo(f"pushed {out} to {repo}: {url}")


def _run(action):
    """Run a library call, turning bad input into a clear one-line error and exit code 1."""
    from emu_cli.training.trainer import TrainingDiverged

    try:
        return action()
    except (ValueError, TrainingDiverged) as error:  # DatasetError, CheckpointError included
        raise click.ClickException(str(error)) from error
    except OSError as error:  # a folder that cannot be written, a full disk: the path, not a trace
        where = f": {error.filename}" if error.filename else ""
        raise click.ClickException(f"{error.strerror or error}{where}") from error


def main() -> None:
    plugins.register_commands(cli)
    cli(prog_name="emu")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
