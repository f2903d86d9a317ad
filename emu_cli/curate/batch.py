"""What filters score: decoded samples, batched, with a cache filters share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class Item:
    """One decoded sample."""

    key: str
    caption: str
    image: Image.Image  # RGB, EXIF orientation applied
    data: bytes  # the encoded file, for byte-level checks such as exact duplicates


@dataclass
class Batch:
    """Samples scored together; ``cache`` lets filters share work (e.g. CLIP embeddings)."""

    items: list[Item]
    cache: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)
