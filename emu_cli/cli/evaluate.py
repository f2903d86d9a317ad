"""``emu evaluate``: the side-by-side protocol."""

from __future__ import annotations

import json
from pathlib import Path

import click

from emu_cli.cli.options import (
    JUDGE_HELP,
    MODEL_HELP,
    POSITIVE,
    config_option,
    device_option,
    run,
    sampling_steps_option,
    seed_option,
)


@click.command()
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
    help="simulated: a registered panel votes (--panel); review: people vote in `emu review OUT`.",
)
@click.option(
    "--panel", default="world", show_default=True, help="The panel that votes when simulated."
)
@click.option(
    "--images-per-prompt",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Images each model makes per prompt; each makes a voted pair.",
)
@sampling_steps_option
@click.option(
    "--guidance",
    type=float,
    help="Classifier-free guidance scale [default: each model's backend's].",
)
@click.option("--a-guidance", type=float, help="Guidance for model A only [default: --guidance].")
@click.option("--b-guidance", type=float, help="Guidance for model B only [default: --guidance].")
@seed_option
@click.option(
    "--max-prompts",
    type=POSITIVE,
    help="Evaluate a sample of this many prompts of the set, drawn by --seed [default: all].",
)
@click.option("--judge", help=JUDGE_HELP + " `none`: no judge proxies.")
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
    panel: str,
    images_per_prompt: int,
    sampling_steps: int,
    guidance: float | None,
    a_guidance: float | None,
    b_guidance: float | None,
    seed: int,
    max_prompts: int | None,
    judge: str,
    clip_model: str | None,
    clip_pretrained: str | None,
    resamples: int,
    as_json: bool,
    device: str,
) -> None:
    """Side-by-side evaluation as the paper's: visual appeal (A / B / Tie, 5 annotators) and
    text faithfulness (A / B / Both / Neither, 3 annotators), with bootstrap intervals."""
    from emu_cli.evaluate.protocol import Settings, evaluate
    from emu_cli.evaluate.report import PROTOCOL_TITLES, describe

    sides = {side: g for side, g in (("a", a_guidance), ("b", b_guidance)) if g is not None}
    settings = Settings(
        sampling_steps, guidance, seed, images_per_prompt, device, side_guidance=sides,
        max_prompts=max_prompts,
    )  # fmt: skip
    results = run(
        lambda: evaluate(
            model_a, model_b, prompts, out,
            annotators=annotators, panel=panel, settings=settings, judge=judge,
            clip_model=clip_model, clip_pretrained=clip_pretrained, resamples=resamples,
        )
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(f"A: {results['a']}\nB: {results['b']}")
    for protocol, subsets in results["protocols"].items():
        for subset, rate in subsets.items():
            click.echo(f"{PROTOCOL_TITLES[protocol]:18} {subset:7} {describe(rate)}")
    if annotators == "review" and not results["votes"]:
        click.echo(f"no votes yet: run `emu review {out} --stage compare`, then this again")
    click.echo(f"report: {out / 'report.html'}")
