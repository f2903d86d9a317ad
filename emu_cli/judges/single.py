"""The shape most published judges share: one model, read on first use from a folder or Hub
repo, giving one raw score per image and prompt, which is mapped to [0, 1] as one measure."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from emu_cli.kit.scoring import Scale, mapped
from emu_cli.plugin.judge import Judge

BATCH = 16


class SingleMeasureJudge(Judge):
    """A judge of one measure, read on first use from ``source`` (default: its Hub
    repo) and scoring in batches; a subclass says how to load it and what its raw score is."""

    measures = ("appeal",)  # one of them
    default_source: str
    scale: Scale

    def __init__(self, source: str | None = None) -> None:
        self.source = source
        self._loaded: Any = None

    def from_source(self, source: str) -> Judge:
        return type(self)(source)

    def score(self, images: list, prompts: list[str]) -> dict[str, np.ndarray]:
        if self._loaded is None:
            self._loaded = self.load(self.source or self.default_source)
        raw = np.concatenate(
            [
                self.raw(images[i : i + BATCH], prompts[i : i + BATCH])
                for i in range(0, len(images), BATCH)
            ]
        ) if images else np.zeros(0)  # fmt: skip
        (measure,) = self.measures
        return mapped({measure: raw}, {measure: self.scale})

    @abstractmethod
    def load(self, source: str) -> Any:
        """The model (and what it reads images and text with), from a folder or Hub repo."""

    @abstractmethod
    def raw(self, images: list, prompts: list[str]) -> np.ndarray:
        """The raw score of each image for its prompt."""
