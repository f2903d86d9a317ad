"""The real judges, registered as a plugin through the same hook as a team's own."""

from __future__ import annotations

from collections.abc import Callable

from emu_cli.plugin.hookspecs import hookimpl


@hookimpl
def register_judges(register: Callable[[object], None]) -> None:
    from emu_cli.judges.clip import ClipAestheticJudge, ClipScoreJudge
    from emu_cli.judges.preference import HpsV2Judge, PickScoreJudge

    for judge in (ClipAestheticJudge(), ClipScoreJudge(), PickScoreJudge(), HpsV2Judge()):
        register(judge)
