"""Seconds of the near-duplicate search as the pool grows: the filter's search
(``kept_matches``: each image against the kept images in the grid cells around it on the
thumbnails' principal components) against the all-pairs search it replaced (block matrix
products over every earlier image), on the same thumbnails in one run.

The thumbnails are a real pool's (``emu data synth`` output or any image folder), made
larger without adding duplicates by mirroring and channel permutations (24 distinct variants
of each image), with the pool's own duplicates and near duplicates kept as they are. The
all-pairs search is run up to ``--all-pairs-up-to`` images: its time grows with the square
of the pool, and so does its memory (a block of 1,024 rows against every earlier image).

    python bench/duplicate_search.py runs/demo/pool --sizes 5000 20000 80000
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emu_cli.curate.filters.duplicates import SCALES, SIDE, kept_matches, thumbnails
from emu_cli.data import index_dataset
from emu_cli.data.dataset import read_image

BLOCK = 1024


def all_pairs_matches(vectors: np.ndarray, max_rms: float) -> np.ndarray:
    """The search the filter used before: for each image, the first earlier image (kept or
    not) within ``max_rms``, by block matrix products against every earlier image."""
    count, scales, dimensions = vectors.shape
    full = vectors[:, 0]
    limit = max_rms**2 * dimensions
    squares = (vectors**2).sum(-1)
    matches = np.full(count, -1)
    for start in range(0, count, BLOCK):
        stop = min(count, start + BLOCK)
        best = np.full((stop - start, stop), np.inf, dtype=np.float32)
        for s in range(scales):
            forward = squares[start:stop, :1] + squares[None, :stop, s]
            forward -= 2 * (full[start:stop] @ vectors[:stop, s].T)
            backward = squares[start:stop, s : s + 1] + squares[None, :stop, 0]
            backward -= 2 * (vectors[start:stop, s] @ full[:stop].T)
            best = np.minimum(best, np.minimum(forward, backward))
        close = (best <= limit) & (np.arange(stop)[None, :] < np.arange(start, stop)[:, None])
        found = close.any(axis=1)
        matches[start:stop][found] = close[found].argmax(axis=1)
    return matches


def pool_thumbnails(pool: Path) -> np.ndarray:
    samples = index_dataset(pool).samples
    rows = [
        np.frombuffer(thumbnails(read_image(s)), dtype=np.uint8)
        for s in tqdm(samples, desc="thumbnails", unit="img")
    ]
    return np.stack(rows).reshape(len(samples), len(SCALES), SIDE, SIDE, 3)


def variants(thumbs: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` of the pool's thumbnails and their 23 mirrored and channel-permuted
    variants (a variant of a centre crop is the same variant's centre crop)."""
    flips = [(), (2,), (3,), (2, 3)]  # axes: image, scale, row, column, channel
    layouts = list(itertools.product(flips, itertools.permutations(range(3))))
    if count > len(thumbs) * len(layouts):
        raise SystemExit(f"--sizes: at most {len(thumbs) * len(layouts)} from this pool")
    needed = layouts[: -(-count // len(thumbs))]  # only as many variants as the count takes
    stacked = np.concatenate([np.flip(thumbs, axis=f)[..., list(o)] for f, o in needed])[:count]
    return stacked.reshape(count, len(SCALES), -1)  # uint8, as the filter holds them


def timed(search, vectors: np.ndarray, max_rms: float) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    matches = search(vectors, max_rms)
    return time.perf_counter() - started, matches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pool", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 80000])
    parser.add_argument("--max-rms", type=float, default=3.0)
    parser.add_argument("--all-pairs-up-to", type=int, default=40000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    thumbs = pool_thumbnails(args.pool)
    rows = []
    print("| images | kept_matches s | all-pairs s | all-pairs / kept_matches | rejected |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        vectors = variants(thumbs, size)
        seconds, matches = timed(kept_matches, vectors, args.max_rms)
        row = {
            "images": size,
            "kept_matches_s": round(seconds, 2),
            "rejected": int((matches >= 0).sum()),
        }
        if size <= args.all_pairs_up_to:
            baseline, old = timed(all_pairs_matches, vectors.astype(np.float32), args.max_rms)
            row |= {"all_pairs_s": round(baseline, 2), "ratio": round(baseline / seconds, 2),
                    "all_pairs_rejected": int((old >= 0).sum())}  # fmt: skip
        rows.append(row)
        print(f"| {size} | {row['kept_matches_s']} | {row.get('all_pairs_s', '-')} | "
              f"{row.get('ratio', '-')} | {row['rejected']} "
              f"(all-pairs {row.get('all_pairs_rejected', '-')}) |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
