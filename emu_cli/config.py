"""Options from a YAML or TOML file, overridden by the command line.

The file's keys are the command's option names (``batch-size`` or ``batch_size``) plus, for
training commands, any field of :class:`emu_cli.training.recipe.Recipe`. The CLI makes them
its commands' defaults, so an option given on the command line always wins.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emu_cli.errors import EmuError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@functools.cache
def _yaml_loader() -> type:
    """A SafeLoader with YAML 1.2's booleans and floats. PyYAML follows YAML 1.1, where ``no``,
    ``yes``, ``on`` and ``off`` are booleans too (``mixed_precision: no`` would read as False
    and fail the option's choice) and a float needs a dot (``weight_decay: 1e-2`` would read as
    the text "1e-2")."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    replaced = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"}
    Loader.yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in replaced]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )
    # Added after the integer resolver, so "10" stays an integer: a float has a dot or an
    # exponent, or is .inf/.nan.
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    )
    return Loader


def load_yaml(text: str) -> Any:
    """YAML as config files and ``KEY=VALUE`` options read it (see :func:`_yaml_loader`)."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader)


def read_config(path: Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) mapping; errors name the file and the problem."""
    if not path.is_file():
        raise EmuError(f"config file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = load_yaml(text) or {}
        else:
            raise EmuError(f"config file '{path}' must end in .yaml, .yml or .toml")
    except (tomllib.TOMLDecodeError, ValueError) as error:
        raise EmuError(f"config file '{path}' is not valid: {error}") from error
    except Exception as error:  # yaml.YAMLError and friends
        raise EmuError(f"config file '{path}' is not valid: {error}") from error
    if not isinstance(data, dict):
        raise EmuError(f"config file '{path}' must hold a mapping of option names")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


# The kinds of option values, by the type of an option's default (bool first: a bool is an int).
KINDS = (
    (bool, "true or false"),
    (int | float, "a number"),
    (str, "text"),
    (list | tuple, "a list"),
    (dict, "a mapping"),
)


def value_kind(value: Any) -> str | None:
    """The kind of a value in words; None for a kind no option is checked against (None)."""
    return next((name for types, name in KINDS if isinstance(value, types)), None)


def changes(before: dict[str, Any], now: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """``key old -> new`` for each of ``keys`` whose value differs: what a run that must keep
    its settings names when asked to continue with others."""
    return [f"{key} {shown(before.get(key))} -> {shown(now.get(key))}"
            for key in keys if before.get(key) != now.get(key)]  # fmt: skip


def shown(value: Any) -> str:
    """A setting as a message shows it: 0.0003, not 0.00030000000000000003."""
    return f"{value:.6g}" if isinstance(value, float) else repr(value)
