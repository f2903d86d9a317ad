"""The core's own plugin: its curation filters and its judges, registered through the same
hooks as any third-party plugin's."""

from __future__ import annotations

from collections.abc import Callable

from emu_cli.curate.builtin import register_filters
from emu_cli.hookspecs import hookimpl
from emu_cli.judging import WorldJudge

__all__ = ["register_filters", "register_judges"]


@hookimpl
def register_judges(register: Callable[[object], None]) -> None:
    register(WorldJudge())
