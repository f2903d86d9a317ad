"""The real judges, registered as a plugin through the same hook as a team's own."""

from __future__ import annotations

from collections.abc import Callable

from emu_cli.plugin.hookspecs import hookimpl


@hookimpl
def register_judges(register: Callable[[object], None]) -> None:
    from emu_cli.judges.clip import ClipAestheticJudge, ClipScoreJudge
    from emu_cli.judges.imagereward import ImageRewardJudge
    from emu_cli.judges.preference import HpsV2Judge, PickScoreJudge
    from emu_cli.judges.vqascore import VqaScoreJudge

    judges = (ClipAestheticJudge(), ClipScoreJudge(), PickScoreJudge(), HpsV2Judge(),
              ImageRewardJudge(), VqaScoreJudge())  # fmt: skip
    for judge in judges:
        register(judge)
