"""``emu push``: checkpoints, curation models and curated sets to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

import click

from emu_cli.cli.options import config_option, run


@click.command()
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
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds a Hub request may wait on the network before it is retried (3 tries).",
)
@config_option()
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
    timeout: float,
) -> None:
    """Push a checkpoint or a CLIP folder from `emu filter train-clip` (a model repo) or, with
    --dataset, a curated image folder to the Hugging Face Hub in one commit, with a card that
    carries its provenance. Token from HF_TOKEN or `hf auth login`; endpoint from
    HF_ENDPOINT."""
    from emu_cli.publish.push import plan_dataset, plan_model, push

    if dataset:
        upload = run(lambda: plan_dataset(path, repo))
    else:
        upload = run(
            lambda: plan_model(
                path, repo, aesthetic=aesthetic, base_model=base_model,
                datasets=list(card_datasets) or None, evaluation=evaluation,
            )
        )  # fmt: skip
    if dry_run:
        click.echo(upload.describe())
        return
    url = run(
        lambda: push(
            upload, private=private, revision=revision, commit_message=commit_message,
            timeout=timeout,
        )
    )  # fmt: skip
    click.echo(f"pushed {path} to {repo}: {url}")
