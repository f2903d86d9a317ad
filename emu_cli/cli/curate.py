"""``emu filter``: the automatic curation stage and the offline models it needs."""

from __future__ import annotations

from pathlib import Path

import click

from emu_cli.cli.options import (
    POSITIVE,
    config_option,
    device_option,
    key_values,
    run,
    seed_option,
)


@click.group(name="filter", invoke_without_command=True)
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
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: worker processes here; ray: a Ray cluster (RAY_ADDRESS, or a local one).",
)
@click.option("--workers", type=POSITIVE, help="Local worker processes (default: all cores).")
@click.option(
    "--chunk-size",
    type=POSITIVE,
    default=256,
    show_default=True,
    help="Images per unit of work; a crashed run resumes from the last finished chunk.",
)
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
    from emu_cli.curate.pipeline import FilterRun, choose_filters, default_filters
    from emu_cli.curate.resources import Resources
    from emu_cli.plugin import registry

    assignments = key_values(settings, "--set")
    configured = ctx.meta.get("config", {}).get("filters")
    specs = run(lambda: choose_filters(configured, names, assignments, clip_model))
    resources = Resources(clip_model, clip_pretrained, device, judges=registry.get_judges)
    filtering = run(
        lambda: FilterRun(
            data, out, specs, resources, engine=engine, workers=workers, chunk_size=chunk_size
        )
    )
    click.echo("filters: " + ", ".join(f.name for f in filtering.filters))
    if not names and configured is None:  # the defaults: say which could not run, and why
        click.echo(f"not run: {default_filters(clip_model)[1]}")
    outcome = run(filtering.run)
    rejected = ", ".join(f"{k} {v}" for k, v in outcome.rejected_by.items() if k)
    click.echo(f"kept {outcome.kept} of {outcome.total} ({rejected or 'none rejected'})")
    rejecting = {k: v for k, v in outcome.rejected_by.items() if k}
    if outcome.total and not outcome.kept and rejecting:
        worst = max(rejecting, key=lambda name: rejecting[name])
        chosen = next((f for f in filtering.filters if f.name == worst), None)
        options = ", ".join(f"{k}={v}" for k, v in chosen.settings.items()) if chosen else ""
        click.echo(
            f"every sample was rejected, {rejecting[worst]} by {worst}"
            + (f" ({options})" if options else "")
            + f": loosen it with --set {worst}.OPTION=VALUE",
            err=True,
        )
    click.echo(
        f"kept set: {out / 'kept'}; manifest: {out / 'manifest.parquet'}; "
        f"report: {out / 'report' / 'index.html'}"
    )


@filter_group.command(name="train-models")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="The pool.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Models folder.")
@click.option(
    "--clip-steps", type=POSITIVE, default=1000, show_default=True, help="CLIP training steps."
)
@click.option(
    "--clip-batch-size",
    type=POSITIVE,
    default=128,
    show_default=True,
    help="CLIP training batch size.",
)
@click.option(
    "--num-rated",
    "rated",
    type=POSITIVE,
    default=2000,
    show_default=True,
    help="Images the panel rates for the aesthetic head.",
)
@seed_option
@config_option()
def train_models(
    data: Path, out: Path, clip_steps: int, clip_batch_size: int, rated: int, seed: int
) -> None:
    """All `emu filter` needs offline, from the pool itself: train-clip, then simulated
    ratings, then train-aesthetic. Parts already in OUT are kept."""
    from emu_cli.curate.offline_models import train_offline_models

    models = run(
        lambda: train_offline_models(
            data, out, clip_steps=clip_steps, clip_batch_size=clip_batch_size, rated=rated,
            seed=seed,
        )
    )  # fmt: skip
    click.echo(f"--clip-model {models.clip} --set aesthetic.weights={models.aesthetic}")


@filter_group.command(name="train-clip")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="The pool.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model folder.")
@click.option("--steps", type=POSITIVE, default=1000, show_default=True, help="Training steps.")
@click.option(
    "--batch-size", type=POSITIVE, default=128, show_default=True, help="Training batch size."
)
@seed_option
@config_option()
def train_clip(data: Path, out: Path, steps: int, batch_size: int, seed: int) -> None:
    """Train a small CLIP on the pool's own pairs (offline stand-in for a pretrained one).

    The folder is in open_clip's layout: pass it as --clip-model to `emu filter`."""
    from emu_cli.curate.clip import train_clip

    record = run(lambda: train_clip(data, out, steps=steps, batch_size=batch_size, seed=seed))
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
@click.option("--clip-pretrained", help="open_clip pretrained tag, with a model name.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help=".safetensors file.")
@seed_option
@config_option()
def train_aesthetic(
    data: Path,
    ratings: Path,
    clip_model: str,
    clip_pretrained: str | None,
    out: Path,
    seed: int,
) -> None:
    """Train a LAION-style aesthetic head on CLIP image embeddings from a ratings file."""
    from emu_cli.curate.aesthetic import train_aesthetic
    from emu_cli.curate.clip import ClipEncoder

    clip = run(lambda: ClipEncoder.load(clip_model, clip_pretrained))
    record = run(lambda: train_aesthetic(data, ratings, clip, out, seed=seed))
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
