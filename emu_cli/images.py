"""Sample grids: what a person looks at to judge a model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image


def make_grid(
    images: Sequence[Image.Image], columns: int | None = None, gap: int = 2
) -> Image.Image:
    """Tile images (resized to the first one's size) into one picture, row by row."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    width, height = images[0].size
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    grid = Image.new(
        "RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), "white"
    )
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        tile = image if image.size == (width, height) else image.resize((width, height))
        grid.paste(tile.convert("RGB"), (column * (width + gap), row * (height + gap)))
    return grid


def save_grid(images: Sequence[Image.Image], path: Path, columns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, columns).save(path)
    return path
