"""The built-in captioners, registered through the same hook as a team's own."""

from __future__ import annotations

from collections.abc import Callable

from emu_cli.plugin.hookspecs import hookimpl


@hookimpl
def register_captioners(register: Callable[[object], None]) -> None:
    from emu_cli.captioners.blip import BlipCaptioner

    register(BlipCaptioner())
