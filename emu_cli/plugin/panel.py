"""The panel contract: who filters, rates and votes where no person has.

People review in ``emu review``; a panel stands in for them, or runs before them, writing the
same records to the same :class:`~emu_cli.human.store.AnnotationStore`. The built-in world
registers ``world``, its simulated annotators; a team can register its own (a crowd-sourcing
service's results, an automatic rater) through ``register_panels``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

    from emu_cli.human.store import AnnotationStore


@dataclass
class FilteringResult:
    """What one filtering stage did: how many images it saw and the keys it kept."""

    seen: int
    kept: list[str]


@dataclass(frozen=True)
class Pair:
    """One side-by-side comparison already in the store (``add_comparison``)."""

    comparison: str
    prompt: str
    image_a: Image.Image
    image_b: Image.Image


class Panel(ABC):
    """Annotators. Every method writes its decisions to ``store`` under its own annotator
    names and is reproducible for a seed."""

    name: str
    description: str = ""

    @abstractmethod
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
        """One human filtering stage (``generalist`` or ``specialist``) over ``images`` (item
        key -> image): record each decision and return what was kept."""

    @abstractmethod
    def vote(self, store: AnnotationStore, pairs: list[Pair], *, seed: int) -> None:
        """Cast the side-by-side protocol's appeal and faithfulness votes on ``pairs``."""

    @abstractmethod
    def rate(self, pool: Path, count: int, *, seed: int) -> dict[str, float]:
        """1-10 ratings (as AVA's) of ``count`` samples of ``pool``, by sample key: what an
        aesthetic head is trained on."""
