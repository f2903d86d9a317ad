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
    """Scores generated images without people. Load models lazily, inside :meth:`score`."""

    name: str
    description: str = ""

    @abstractmethod
    def score(self, images: list[Image.Image], prompts: list[str]) -> dict[str, np.ndarray]:
        """Per image, ``appeal`` and ``faithfulness`` to its prompt, each in [0, 1]."""
