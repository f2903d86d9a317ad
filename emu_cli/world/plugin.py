"""The built-in world as a plugin: its pixel judge, its simulated annotator panel and its
prompt sets, registered through the same hooks as a team's real judges, people and benchmarks.
The workflows know only those interfaces; the world is what makes them testable offline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from emu_cli.plugin.hookspecs import hookimpl
from emu_cli.plugin.judge import Judge
from emu_cli.plugin.panel import FilteringResult, Pair, Panel
from emu_cli.plugin.prompt_set import Prompt, PromptSet

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from emu_cli.human.store import AnnotationStore


class WorldJudge(Judge):
    name = "world"
    description = "the built-in world's pixel judges: appeal, and subject/color/background"

    def __init__(self) -> None:
        self._judges = None

    def score(self, images: list[Image.Image], prompts: list[str]) -> dict[str, np.ndarray]:
        import numpy as np

        from emu_cli.world.judges import ATTRIBUTES, WorldJudges

        if self._judges is None:
            self._judges = WorldJudges.load()
        judgement = self._judges.judge(images)
        matches = self._judges.faithfulness(images, prompts, judgement)
        # The share of named attributes shown right: smoother than all-or-nothing, so a
        # curve over a few dozen images still moves.
        faithfulness = np.mean([matches[name] for name in ATTRIBUTES], axis=0)
        return {"appeal": judgement.appeal, "faithfulness": faithfulness}


class WorldPanel(Panel):
    name = "world"
    description = "the built-in world's simulated annotators: noisy readings of its judges"

    def filter(
        self,
        store: AnnotationStore,
        stage: str,
        images: dict[str, Image.Image],
        *,
        annotators: int,
        seed: int,
        keep_rate: float,
    ) -> FilteringResult:
        from emu_cli.world.annotators import simulate_filtering
        from emu_cli.world.judges import WorldJudges

        return simulate_filtering(
            store, stage, images, WorldJudges.load(),
            annotators=annotators, seed=seed, keep_rate=keep_rate,
        )  # fmt: skip

    def vote(self, store: AnnotationStore, pairs: list[Pair], *, seed: int) -> None:
        from emu_cli.world.annotators import simulate_votes
        from emu_cli.world.judges import WorldJudges

        simulate_votes(store, pairs, WorldJudges.load(), seed=seed)

    def rate(self, pool: Path, count: int, *, seed: int) -> dict[str, float]:
        from emu_cli.world.annotators import rate_pool

        return rate_pool(pool, count, seed=seed)


def _world(per_subject: int, seed: int, subjects: tuple[str, ...] | None = None) -> list[Prompt]:
    from emu_cli.world.concepts import HELD_OUT_SUBJECTS, SUBJECTS, concept_prompts

    subjects = subjects or SUBJECTS
    texts = iter(concept_prompts(subjects, per_subject, seed))  # per_subject each, in order
    return [
        Prompt(next(texts), ("unseen" if subject in HELD_OUT_SUBJECTS else "seen", subject))
        for subject in subjects
        for _ in range(per_subject)
    ]


def _validation() -> list[Prompt]:
    from emu_cli.world.concepts import HELD_IN_SUBJECTS

    return _world(4, seed=7, subjects=HELD_IN_SUBJECTS)


def _world_balanced(per_subject: int = 12) -> list[Prompt]:
    """``per_subject`` prompts for each subject, then more for each held-out one until the
    unseen split is as large as the seen one (72 each): a split of 24 pairs cannot tell a share
    from a 70 % bar (docs/results.md)."""
    from emu_cli.world.concepts import HELD_IN_SUBJECTS, HELD_OUT_SUBJECTS

    extra = per_subject * len(HELD_IN_SUBJECTS) // len(HELD_OUT_SUBJECTS) - per_subject
    return _world(per_subject, seed=0) + _world(extra, seed=1, subjects=HELD_OUT_SUBJECTS)


PROMPT_SETS = (
    PromptSet("world", _world_balanced, "every subject, seen and unseen splits of 72 each"),
    PromptSet("world-small", lambda: _world(4, seed=0), "4 prompts per subject, for tests"),
    PromptSet("validation", _validation, "24 prompts of seen subjects, for early stopping"),
)


@hookimpl
def register_judges(register: Callable[[object], None]) -> None:
    register(WorldJudge())


@hookimpl
def register_panels(register: Callable[[object], None]) -> None:
    register(WorldPanel())


@hookimpl
def register_prompt_sets(register: Callable[[object], None]) -> None:
    for prompt_set in PROMPT_SETS:
        register(prompt_set)
