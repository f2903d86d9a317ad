"""Automatic judges of generated images: what quality-tuning's early stopping watches and what
``emu evaluate`` reports beside the human protocol.

Offline, the built-in world's pixel judges (``world``) stand in for people; a plugin can
register another (an aesthetic predictor, a VQA faithfulness model) with ``register_judges``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class Judge(ABC):
    name: str
    description: str = ""

    @abstractmethod
    def score(self, images: list[Image.Image], prompts: list[str]) -> dict[str, np.ndarray]:
        """Per image, ``appeal`` and ``faithfulness`` to its prompt, each in [0, 1]."""


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
