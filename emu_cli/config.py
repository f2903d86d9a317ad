"""Options from a YAML or TOML file, overridden by the command line.

The file's keys are the command's option names (``batch-size`` or ``batch_size``) plus, for
training commands, any field of :class:`emu_cli.training.recipe.Recipe`. They become click's
``default_map``, so an option given on the command line always wins.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any

import click

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@functools.cache
def _yaml_loader() -> type:
    """A SafeLoader with YAML 1.2's booleans: only true and false. PyYAML follows YAML 1.1,
    where ``no``, ``yes``, ``on`` and ``off`` are booleans too, so ``mixed_precision: no`` would
    read as False and fail the option's choice."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    boolean = "tag:yaml.org,2002:bool"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != boolean]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        boolean, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return Loader


def load_yaml(text: str) -> Any:
    """YAML as config files and ``KEY=VALUE`` options read it (see :func:`_yaml_loader`)."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader)


def read_config(path: Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) mapping; errors name the file and the problem."""
    if not path.is_file():
        raise click.BadParameter(f"config file '{path}' does not exist", param_hint="--config")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = load_yaml(text) or {}
        else:
            raise click.BadParameter(
                f"config file '{path}' must end in .yaml, .yml or .toml", param_hint="--config"
            )
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise click.BadParameter(f"config file '{path}' is not valid: {error}") from error
    except Exception as error:  # yaml.YAMLError and friends
        raise click.BadParameter(f"config file '{path}' is not valid: {error}") from error
    if not isinstance(data, dict):
        raise click.BadParameter(f"config file '{path}' must hold a mapping of option names")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def config_option(*, extra_keys: set[str] | None = None) -> Any:
    """A ``--config FILE`` option that fills the command's defaults from the file.

    Keys naming neither an option of the command nor one of ``extra_keys`` are an error, so a
    typo in a config file does not pass silently. Extra keys are left in ``ctx.meta["config"]``.
    """

    def load(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        data = read_config(Path(value))
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
