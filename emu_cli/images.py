"""Sample grids: what a person looks at to judge a model. Tiles are at least ``MIN_TILE`` px
(a tiny model's 32 px images are enlarged with nearest-neighbour, so their pixels stay
pixels), with each image's caption under it, in a near-square layout."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

MIN_TILE = 256
MAX_TILE = 512  # larger images are shrunk: a grid of 16 at 1024 px would be 4096 px wide
CAPTION_LINES = 3
FONT_SIZE = 14


def tile_size(width: int, height: int) -> tuple[int, int]:
    """The size a ``width`` x ``height`` image is shown at: a whole multiple of it up to at
    least ``MIN_TILE`` on its shorter side, or shrunk to ``MAX_TILE`` on its longer side."""
    if max(width, height) > MAX_TILE:
        scale = MAX_TILE / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    factor = max(1, math.ceil(MIN_TILE / min(width, height)))
    return width * factor, height * factor


def _caption_lines(text: str, width: int, font: ImageFont.ImageFont) -> list[str]:
    average = max(1.0, font.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
    lines = textwrap.wrap(text, width=max(8, int(width / average)))
    if len(lines) > CAPTION_LINES:
        lines = lines[:CAPTION_LINES]
        lines[-1] = lines[-1][: max(0, len(lines[-1]) - 1)] + "…"
    return lines


def make_grid(
    images: Sequence[Image.Image],
    columns: int | None = None,
    captions: Sequence[str] | None = None,
    gap: int = 6,
) -> Image.Image:
    """Tile ``images`` (each shown at the first one's :func:`tile_size`) row by row, with
    ``captions`` (one per image) under them."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images")
    width, height = tile_size(*images[0].size)
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    font = ImageFont.load_default(size=FONT_SIZE)
    wrapped = [_caption_lines(c, width, font) for c in captions] if captions else []
    line_height = FONT_SIZE + 3
    strip = max((len(lines) for lines in wrapped), default=0) * line_height
    strip += 4 if strip else 0
    cell_height = height + strip
    grid = Image.new(
        "RGB",
        (columns * width + (columns + 1) * gap, rows * cell_height + (rows + 1) * gap),
        "white",
    )
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        left, top = gap + column * (width + gap), gap + row * (cell_height + gap)
        shown = image.convert("RGB")
        if shown.size != (width, height):
            smaller = shown.width < width
            resample = Image.Resampling.NEAREST if smaller else Image.Resampling.LANCZOS
            shown = shown.resize((width, height), resample)
        grid.paste(shown, (left, top))
        for number, line in enumerate(wrapped[i] if wrapped else []):
            draw.text((left, top + height + 2 + number * line_height), line, "black", font)
    return grid


def save_grid(
    images: Sequence[Image.Image],
    path: Path,
    columns: int | None = None,
    captions: Sequence[str] | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, columns, captions).save(path)
    return path
