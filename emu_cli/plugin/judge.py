"""Automatic judges of generated images: what quality-tuning's early stopping watches and what
``emu evaluate`` reports beside the human protocol.

A judge gives each image ``appeal`` and ``faithfulness`` to its prompt, each in [0, 1], and
may give the raw score they were mapped from (``raw_appeal``, ``raw_faithfulness``; see
:class:`emu_cli.kit.scoring.Scale` for the mapping every built-in judge uses). A judge that
measures one of them only says so in :attr:`Judge.measures`; it then serves in a composed judge
(``--judge appeal=NAME,faithfulness=NAME``). A judge whose weights can come from elsewhere (a
folder, another Hub repo) is named ``NAME@SOURCE`` and made by :meth:`Judge.from_source`.

The built-in world's pixel judge (``world``) stands in for people offline; ``emu_cli.judges``
registers the real ones (CLIP aesthetic, CLIP score, PickScore, HPSv2, ImageReward,
VQAScore); a plugin registers more with ``register_judges``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from emu_cli.errors import EmuError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

MEASURES = ("appeal", "faithfulness")


class Judge(ABC):
    """Scores generated images without people. Load models lazily, inside :meth:`score`."""

    name: str
    description: str = ""
    measures: tuple[str, ...] = MEASURES
    source: str | None = None  # where its weights come from, when not its default

    @abstractmethod
    def score(self, images: list[Image.Image], prompts: list[str]) -> dict[str, np.ndarray]:
        """Per image, each of :attr:`measures` in [0, 1] (and ``raw_NAME`` where mapped)."""

    def from_source(self, source: str) -> Judge:
        """This judge with its weights from ``source`` (a folder or a Hub repo)."""
        raise EmuError(f"judge '{self.name}' takes no weights source (got '@{source}')")

    @property
    def spec(self) -> str:
        """How the judge is named on a command line: ``NAME`` or ``NAME@SOURCE``."""
        return self.name if self.source is None else f"{self.name}@{self.source}"
