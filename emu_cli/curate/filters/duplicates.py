"""Exact duplicates (same bytes) and near duplicates (the same picture reposted: recompressed,
slightly cropped and rescaled).

Near duplicates are compared as 8x8 RGB thumbnails of the whole image and of centre crops at
96, 92 and 88 percent of its side, so a repost cropped by up to 6 percent a side still lines
up with its original at one of the scales. Two images are near duplicates when their RMS
thumbnail difference at the best-matching scale is at most ``max_rms`` (0-255 levels).
A perceptual hash was tried first: it misses a fifth of such reposts in the world's pool at
any threshold that spares distinct images, because a 12 percent zoom moves its DCT signs.

The first image of a group, in pool order, is kept; a later one that matches any earlier
image is rejected, naming it. The search is exact (block matrix products), fine for pools of
a few hundred thousand images per run.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources

if TYPE_CHECKING:
    import pandas as pd

SCALES = (1.0, 0.96, 0.92, 0.88)
SIDE = 8
BLOCK = 1024


def thumbnails(image: Image.Image) -> bytes:
    """uint8 (len(SCALES), SIDE*SIDE*3) thumbnails of centre crops, as bytes."""
    width, height = image.size
    rows = []
    for scale in SCALES:
        left, top = width * (1 - scale) / 2, height * (1 - scale) / 2
        crop = image.crop((left, top, width - left, height - top))
        rows.append(np.asarray(crop.resize((SIDE, SIDE), Image.Resampling.BOX)).reshape(-1))
    return np.stack(rows).astype(np.uint8).tobytes()


def earliest_matches(vectors: np.ndarray, max_rms: float) -> np.ndarray:
    """For each image, the first earlier image within ``max_rms``, or -1.

    ``vectors``: (n, scales, d). A pair's distance is the smaller of (a at full size against b
    at every scale) and (b at full size against a at every scale).
    """
    count, scales, dimensions = vectors.shape
    full = vectors[:, 0]
    limit = max_rms**2 * dimensions
    squares = (vectors**2).sum(-1)  # (n, scales)
    matches = np.full(count, -1)
    for start in range(0, count, BLOCK):
        stop = min(count, start + BLOCK)
        best = np.full((stop - start, start + (stop - start)), np.inf, dtype=np.float32)
        for s in range(scales):
            # this block at full size against earlier images at scale s, and the reverse
            forward = (
                squares[start:stop, :1]
                + squares[None, :stop, s]
                - 2 * (full[start:stop] @ vectors[:stop, s].T)
            )
            backward = (
                squares[start:stop, s : s + 1]
                + squares[None, :stop, 0]
                - 2 * (vectors[start:stop, s] @ full[:stop].T)
            )
            best = np.minimum(best, np.minimum(forward, backward))
        earlier = np.arange(stop)[None, :] < np.arange(start, stop)[:, None]
        close = (best <= limit) & earlier
        found = close.any(axis=1)
        matches[start:stop][found] = close[found].argmax(axis=1)
    return matches


class DuplicateFilter(Filter):
    name = "duplicates"
    description = "exact (SHA-256 of the file) and near duplicates (multi-scale thumbnails)"
    phase = "scan"
    options = {"max_rms": 3.0}

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        return {
            "sha256": [hashlib.sha256(item.data).hexdigest() for item in batch.items],
            "_thumbnails": [thumbnails(item.image) for item in batch.items],
        }

    def decide(self, table: pd.DataFrame) -> pd.Series:
        import pandas as pd

        keys = table["key"].tolist()
        reasons: list[str | None] = [None] * len(table)
        first_by_bytes: dict[str, int] = {}
        distinct = []
        for position, digest in enumerate(table["sha256"]):
            if digest in first_by_bytes:
                reasons[position] = f"exact duplicate of {keys[first_by_bytes[digest]]}"
            else:
                first_by_bytes[digest] = position
                distinct.append(position)
        vectors = np.stack(
            [
                np.frombuffer(table["_thumbnails"].iloc[p], dtype=np.uint8).reshape(len(SCALES), -1)
                for p in distinct
            ]
        ).astype(np.float32)
        for position, match in zip(
            distinct, earliest_matches(vectors, float(self.settings["max_rms"])), strict=True
        ):
            if match >= 0:
                reasons[position] = f"near duplicate of {keys[distinct[match]]}"
        return pd.Series(reasons, index=table.index, dtype=object)
