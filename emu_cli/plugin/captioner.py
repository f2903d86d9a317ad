"""Captioners: models that write a first caption for each image of a folder that has none, for
people to correct in the review app's caption stage (``emu data caption``).

A captioner whose weights can come from elsewhere (a folder, another Hub repo) is named
``NAME@SOURCE`` and made by :meth:`Captioner.from_source`. ``emu_cli.captioners`` registers the
built-in one (BLIP, through transformers); a plugin registers more with ``register_captioners``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from emu_cli.errors import EmuError

if TYPE_CHECKING:
    from PIL import Image


class Captioner(ABC):
    """Writes one caption per image. Load models lazily, inside :meth:`caption`."""

    name: str
    description: str = ""
    source: str | None = None  # where its weights come from, when not its default

    @abstractmethod
    def caption(self, images: list[Image.Image]) -> list[str]:
        """One caption per image, in order; an empty one where it has nothing to say."""

    def from_source(self, source: str) -> Captioner:
        """This captioner with its weights from ``source`` (a folder or a Hub repo)."""
        raise EmuError(f"captioner '{self.name}' takes no weights source (got '@{source}')")

    @property
    def spec(self) -> str:
        return self.name if self.source is None else f"{self.name}@{self.source}"
