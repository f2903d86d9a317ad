"""``emu data``: make, rate, review by a panel, and judge datasets of the built-in world."""

from __future__ import annotations

import json
from pathlib import Path

import click

from emu_cli.cli.options import (
    POSITIVE,
    config_option,
    run,
    seed_option,
)
from emu_cli.errors import EmuError
from emu_cli.plugin import registry as plugins


@click.group()
def data() -> None:
    """Make and inspect datasets."""


@data.command()
@click.option(
    "--num-images", "count", type=POSITIVE, required=True, help="Number of image-caption pairs."
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Image folder or shard folder."
)
@seed_option
@click.option("--size", type=int, default=64, show_default=True, help="Image side in pixels.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["imagefolder", "webdataset"]),
    default="imagefolder",
    show_default=True,
    help="imagefolder: PNG files and metadata.jsonl; webdataset: .tar shards.",
)
@click.option("--workers", type=POSITIVE, help="Processes drawing images (default: all cores).")
@click.option(
    "--clean",
    is_flag=True,
    help="No junk and only well-made pictures (large, sharp subject): what a generator can "
    "learn without the pool's noise.",
)
@config_option()
def synth(
    count: int, out: Path, seed: int, size: int, format_: str, workers: int | None, clean: bool
) -> None:
    """Write the built-in world's image-caption pairs (deterministic for a seed)."""
    from emu_cli.world.synth import synthesize

    run(
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
@click.option(
    "--num-samples",
    "samples",
    type=POSITIVE,
    default=90_000,
    show_default=True,
    help="Rendered scenes to train on.",
)
@click.option(
    "--epochs", type=POSITIVE, default=10, show_default=True, help="Passes over the scenes."
)
@seed_option
@config_option()
def train_judges(out: Path, samples: int, epochs: int, seed: int) -> None:
    """Train the world's pixel judges (appeal and faithfulness) on rendered scenes.

    Deterministic for a seed. The weights shipped in emu_cli/world/weights/ were made by this
    command with its defaults."""
    from emu_cli.world.judges import train_judges

    record = run(lambda: train_judges(out, samples=samples, epochs=epochs, seed=seed))
    click.echo(f"wrote {out} ({record['seconds']} s)")


@data.command(name="rate")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="The pool.")
@click.option(
    "--num-images", "count", type=POSITIVE, default=2000, show_default=True, help="Images to rate."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="JSON lines file of ratings.",
)
@seed_option
@click.option("--panel", default="world", show_default=True, help="The panel that rates.")
@config_option()
def rate(data: Path, count: int, out: Path, seed: int, panel: str) -> None:
    """1-10 ratings of a random subset of a pool by a registered panel, as AVA's (JSON
    lines)."""
    from emu_cli.curate.offline_models import write_ratings

    ratings = run(lambda: plugins.get_panel(panel).rate(data, count, seed=seed))
    run(lambda: write_ratings(ratings, out))
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
@click.option(
    "--keep-rate",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Fraction of the images the stage aims to keep.",
)
@click.option(
    "--num-annotators",
    "annotators",
    type=POSITIVE,
    default=4,
    show_default=True,
    help="Simulated annotators sharing the images.",
)
@seed_option
@click.option("--panel", default="world", show_default=True, help="The panel that reviews.")
@config_option()
def simulate_review(
    data: Path,
    stage: str,
    out: Path,
    store: Path | None,
    keep_rate: float,
    annotators: int,
    seed: int,
    panel: str,
) -> None:
    """One human filtering stage done by a registered panel (the world's simulated annotators
    by default); their decisions go to the review app's database and what they keep to an
    image folder."""
    from emu_cli.human.stages import simulate_stage

    result = run(
        lambda: simulate_stage(
            data, out, stage=stage, store_path=store or out.parent / "annotations.sqlite",
            keep_rate=keep_rate, annotators=annotators, seed=seed, panel=panel,
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
@config_option()
def judge(images: tuple[str, ...], caption: str | None, weights: str | None, as_json: bool) -> None:
    """Score IMAGES with the world's pixel judges: appeal per guideline category."""
    from emu_cli.world.judges import ATTRIBUTES, judge_files

    try:
        rows = judge_files(list(images), caption, Path(weights) if weights else None)
    except EmuError as error:  # a caption or a file that cannot be judged: a usage error
        raise click.BadParameter(str(error)) from error
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        scores = " ".join(f"{k} {v:.2f}" for k, v in row["categories"].items())
        seen = f"{row['color']} {row['subject']} on {row['background']}"
        line = f"{row['image']}: appeal {row['appeal']:.2f} ({scores}); shows a {seen}"
        if caption is not None:
            wrong = [k for k in ATTRIBUTES if not row["faithful"][k]]
            line += "; " + (f"not the caption's {', '.join(wrong)}" if wrong else "as captioned")
        click.echo(line)


@data.command(name="caption")
@click.option(
    "--data",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="A folder of images; a NAME.txt is written beside each that has none.",
)
@click.option(
    "--captioner",
    "spec",
    default="blip",
    show_default=True,
    help="A registered captioner (`emu backends` lists them), or NAME@FOLDER or "
    "NAME@OWNER/NAME for its weights.",
)
@click.option("--overwrite", is_flag=True, help="Caption every image, replacing NAME.txt files.")
@click.option(
    "--batch-size", type=POSITIVE, default=8, show_default=True, help="Images captioned at once."
)
@config_option()
def caption(data: Path, spec: str, overwrite: bool, batch_size: int) -> None:
    """Write a first caption beside each image of a folder (kohya's NAME.txt layout), for
    people to correct in `emu review DATA --stage caption`."""
    from emu_cli.data.captions import caption_folder

    result = run(
        lambda: caption_folder(
            data, plugins.captioner(spec), overwrite=overwrite, batch_size=batch_size
        )
    )
    click.echo(f"wrote {result.written} captions in {data} ({result.kept} images had one already)")
    if result.failed:
        named = "; ".join(f"{k} ({why})" for k, why in result.failed[:5])
        click.echo(f"{len(result.failed)} images left without a caption, e.g. {named}", err=True)
