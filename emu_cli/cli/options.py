"""What the commands share: option decorators, ``--config``, ``KEY=VALUE`` pairs, and running a
library call so that bad input is a one-line error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from emu_cli.config import load_yaml, read_config
from emu_cli.errors import EmuError


def config_option(*, extra_keys: set[str] | None = None) -> Any:
    """A ``--config FILE`` option that fills the command's defaults from the file.

    Keys naming neither an option of the command nor one of ``extra_keys`` are an error, so a
    typo in a config file does not pass silently. Extra keys are left in ``ctx.meta["config"]``.
    """

    def load(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            data = read_config(Path(value))
        except EmuError as error:
            raise click.BadParameter(str(error), param_hint="--config") from error
        options = {p.name for p in ctx.command.params if p.name}
        unknown = sorted(set(data) - options - (extra_keys or set()))
        if unknown:
            raise click.BadParameter(
                f"config file '{value}' has unknown keys: {', '.join(unknown)}",
                param_hint="--config",
            )
        ctx.default_map = {
            **(ctx.default_map or {}),
            **{k: v for k, v in data.items() if k in options},
        }
        ctx.meta["config"] = {k: v for k, v in data.items() if k not in options}
        return value

    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=load,
        help="YAML or TOML file of options; command-line options override it.",
    )


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
    """Training precision and the memory it takes: autocast, gradient checkpointing, the
    optimizer's state."""
    function = click.option(
        "--optimizer",
        type=click.Choice(["adamw", "adamw8bit"]),
        help="AdamW, or bitsandbytes' 8-bit AdamW: its two moments in 1 byte a parameter each, "
        "not 4 (pip install 'emu-cli[8bit]') [default: adamw].",
    )(function)
    function = click.option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        default=None,
        help="Recompute activations in the backward pass: less memory, about a third more "
        "compute [default: off].",
    )(function)
    return click.option(
        "--mixed-precision",
        type=click.Choice(["no", "fp16", "bf16"]),
        help="Autocast precision for training; bf16 also speeds up CPUs that support it.",
    )(function)


JUDGE_HELP = (
    "A registered judge (`emu backends` lists them), NAME@FOLDER or NAME@OWNER/NAME for its "
    "weights, or appeal=JUDGE,faithfulness=JUDGE [default: world for a model of the built-in "
    "world; required otherwise]."
)


def validation_options(function):
    """How a validation generates and who judges it: shared by pre-training, which records the
    curve, and quality-tuning, which stops early on it."""
    function = click.option(
        "--validation-prompts",
        help="Prompt file or builtin:NAME generated at each validation [default: "
        "builtin:validation for a model of the built-in world; required otherwise].",
    )(function)
    function = click.option(
        "--validation-max-prompts",
        type=POSITIVE,
        help="Validate on a sample of this many of the prompts, drawn by --seed [default: all].",
    )(function)
    function = click.option("--judge", help=JUDGE_HELP)(function)
    return click.option(
        "--validation-sampling-steps",
        type=POSITIVE,
        default=20,
        show_default=True,
        help="Sampling steps of each validation image.",
    )(function)


def sampling_steps_option(function: Callable) -> Callable:
    """Steps of the sampler, named apart from training's ``--steps`` everywhere."""
    return click.option(
        "--sampling-steps",
        type=POSITIVE,
        default=25,
        show_default=True,
        help="Sampling steps of each image.",
    )(function)


def seed_option(function: Callable) -> Callable:
    return click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="Random seed: the same seed and inputs give the same result.",
    )(function)


def report_to_option(function: Callable) -> Callable:
    from emu_cli.training.trackers import REPORT_TO

    return click.option(
        "--report-to",
        type=click.Choice(REPORT_TO),
        help="Also log loss, learning rate, images/s, validation scores and sample grids to "
        "TensorBoard (OUT/logs) or Weights & Biases, through accelerate's trackers "
        "[default: none].",
    )(function)


def print_recipe_option(function: Callable) -> Callable:
    return click.option(
        "--print-recipe",
        is_flag=True,
        help="Print the resolved recipe, each field with where it came from, and exit.",
    )(function)


def recipe_layers(
    ctx: click.Context, config_only: dict[str, Any], options: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """The recipe's config-file and command-line layers (emu_cli.training.resolution):
    ``config_only`` holds the file's recipe fields no option offers, ``options`` the recipe
    options' values, each from the file or the command line."""
    from click.core import ParameterSource

    def given(source: ParameterSource) -> dict[str, Any]:
        return {k: v for k, v in options.items() if ctx.get_parameter_source(k) == source}

    config = {**config_only, **given(ParameterSource.DEFAULT_MAP)}
    return [("config file", config), ("command line", given(ParameterSource.COMMANDLINE))]


def key_values(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict, values read as YAML scalars (2, 0.5, true, text)."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=flag)
        result[key.strip()] = load_yaml(value)
    return result


def can_push_after_training(repo: str | None) -> None:
    """``--push-to-hub`` fails before training, not hours later, when it cannot work."""
    if repo:
        from emu_cli.publish.push import check_can_push

        run(lambda: check_can_push(repo))


def push_after_training(out: Path, repo: str | None) -> None:
    """``--push-to-hub``: the finished checkpoint, as `emu push` would."""
    if repo:
        from emu_cli.publish.push import plan_checkpoint, push

        url = run(lambda: push(plan_checkpoint(out, repo)))
        click.echo(f"pushed {out} to {repo}: {url}")


def run(action: Callable[[], Any]) -> Any:
    """Run a library call, turning bad input into a clear one-line error and exit code 1."""
    from emu_cli.training.divergence import TrainingDiverged

    try:
        return action()
    except (ValueError, TrainingDiverged) as error:  # EmuError and every ValueError subclass
        raise click.ClickException(str(error)) from error
    except OSError as error:  # a folder that cannot be written, a full disk: the path, not a trace
        where = f": {error.filename}" if error.filename else ""
        raise click.ClickException(f"{error.strerror or error}{where}") from error
