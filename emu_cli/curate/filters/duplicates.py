"""Exact duplicates (same bytes) and near duplicates (the same picture reposted: recompressed,
slightly cropped and rescaled).

Near duplicates are compared as 8x8 RGB thumbnails of the whole image and of centre crops at
96, 92 and 88 percent of its side, so a repost cropped by up to 6 percent a side still lines
up with its original at one of the scales. Two images are near duplicates when their RMS
thumbnail difference at the best-matching scale is at most ``max_rms`` (0-255 levels).
A perceptual hash was tried first: it misses a fifth of such reposts in the world's pool at
any threshold that spares distinct images, because a 12 percent zoom moves its DCT signs.

In pool order, an image that matches an image already kept is rejected, naming the earliest
such; otherwise it is kept. So no two kept images match, and every rejected one names an
original that is in the kept set. The search is exact, and its work grows with the pool, not
with its square (``kept_matches``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources

if TYPE_CHECKING:
    import pandas as pd

SCALES = (1.0, 0.96, 0.92, 0.88)
SIDE = 8
PROJECTED = 16  # directions of most spread the search compares on before the full thumbnails
GRID = 3  # the first of those, on whose grid kept images are filed (27 cells around each)


def thumbnails(image: Image.Image) -> bytes:
    """uint8 (len(SCALES), SIDE*SIDE*3) thumbnails of centre crops, as bytes."""
    width, height = image.size
    rows = []
    for scale in SCALES:
        left, top = width * (1 - scale) / 2, height * (1 - scale) / 2
        crop = image.crop((left, top, width - left, height - top))
        rows.append(np.asarray(crop.resize((SIDE, SIDE), Image.Resampling.BOX)).reshape(-1))
    return np.stack(rows).astype(np.uint8).tobytes()


def _principal_axes(vectors: np.ndarray, count: int) -> np.ndarray:
    """(d, count) orthonormal directions along which the full-size thumbnails spread most
    (from up to 20,000 of them). Projected on them, no difference grows longer, so two
    thumbnails within the match radius are within it once projected too."""
    sample = vectors[:: max(1, len(vectors) // 20_000), 0].astype(np.float64)
    sample -= sample.mean(axis=0)
    _, directions = np.linalg.eigh(sample.T @ sample)  # all d of them, however few thumbnails
    return directions[:, ::-1][:, :count]


def _pair_distances(image: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Squared distances of one image (scales, d) to others (m, scales, d): for each, the best
    of (the image at full size against the other at any scale) and the reverse."""
    forward = ((others - image[0]) ** 2).sum(-1)  # (m, scales)
    backward = ((others[:, :1] - image) ** 2).sum(-1)
    return np.minimum(forward, backward).min(axis=1)


def kept_matches(vectors: np.ndarray, max_rms: float) -> np.ndarray:
    """In pool order, each image against the images kept so far: the earliest kept image it
    matches (it is then rejected), or -1 (it is kept).

    ``vectors``: (n, scales, d) thumbnails (uint8 keeps a large pool small); a pair matches
    when its RMS difference at the best-matching scale, either way round, is at most
    ``max_rms``. The thumbnails are projected on the 16 directions along which the pool's
    spread most; kept images are filed on a grid of the first three (at each scale) with cells
    as wide as the match radius, so an image is compared only with kept images in the 27
    cells around its own, first on all 16 projections, then in full. A projection on
    orthonormal directions never lengthens a difference, so the search is exact. Its work
    grows with the pool, not with the pool's square: kept images are farther than the radius
    from each other, so few share a neighbourhood, and a crowd of near-identical images (blank
    ones) costs one comparison each.
    """
    count, scales, dimensions = vectors.shape
    if count == 0:
        return np.full(0, -1)
    radius = max_rms * dimensions**0.5
    limit = radius**2
    # The projections are rounded, the full check is not (uint8 squares sum exactly in float32),
    # so the grid and the first check allow a pair at the radius a little room.
    slack = 1.001
    axes = _principal_axes(vectors, PROJECTED)
    projected = np.stack([vectors[:, s] @ axes for s in range(scales)], axis=1)
    projected = (projected - projected.min(axis=(0, 1))).astype(np.float32)  # (n, scales, 16)
    cells = np.floor(projected[..., :GRID] / (max(radius, 1.0) * slack)).astype(np.int64) + 1
    offsets = np.stack(np.meshgrid(*[(-1, 0, 1)] * GRID, indexing="ij"), -1).reshape(-1, GRID)
    width = int(cells.max()) + 2

    def key(cell: np.ndarray) -> np.ndarray:
        return cell @ width ** np.arange(GRID)

    own_cells = key(cells)  # (n, scales)
    any_scale: dict[int, list[int]] = defaultdict(list)  # cell -> kept images, by any scale
    full_size: dict[int, list[int]] = defaultdict(list)  # cell -> kept images, at full size
    matches = np.full(count, -1)
    for image in range(count):
        around = key(cells[image][:, None, :] + offsets)  # (scales, 27)
        near = [any_scale[cell] for cell in around[0].tolist() if cell in any_scale]
        near += [full_size[cell] for cell in set(around[1:].ravel().tolist()) if cell in full_size]
        kept = np.unique(np.fromiter(chain.from_iterable(near), dtype=np.int64))  # earliest first
        for space, allowed in ((projected, limit * slack + 1e-3), (vectors, limit)):
            if len(kept):
                this, others = (space[i].astype(np.float32, copy=False) for i in (image, kept))
                kept = kept[_pair_distances(this, others) <= allowed]
        if len(kept):
            matches[image] = kept[0]
            continue
        full_size[int(own_cells[image, 0])].append(image)
        for cell in set(own_cells[image].tolist()):
            any_scale[cell].append(image)
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
        thumbs = b"".join(table["_thumbnails"].iloc[distinct])
        vectors = np.frombuffer(thumbs, dtype=np.uint8).reshape(
            len(distinct), len(SCALES), SIDE * SIDE * 3
        )
        for position, match in zip(
            distinct, kept_matches(vectors, float(self.settings["max_rms"])), strict=True
        ):
            if match >= 0:
                reasons[position] = f"near duplicate of {keys[distinct[match]]}"
        return pd.Series(reasons, index=table.index, dtype=object)
