"""Aspect-ratio buckets, as kohya's sd-scripts and SimpleTuner train: instead of cropping every
image to a square, each goes to the bucket (a width x height of about the training area, sides
a multiple the model needs) whose shape is nearest its own, is scaled to cover it and cropped
only the little that is left, and every batch holds one bucket's images.

The order stays a pure function of (seed, epoch, step), so a resumed run reads exactly the
batches the killed one would have read."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emu_cli.data.dataset import sample_generator
from emu_cli.data.sources import SampleIndex

# The widest shape a bucket may have (either way): kohya's default range at 1024 px.
MAX_RATIO = 2.0

Size = tuple[int, int]  # (width, height)


def bucket_sizes(resolution: int, multiple: int, max_ratio: float = MAX_RATIO) -> list[Size]:
    """The sizes of area at most ``resolution`` squared, sides multiples of ``multiple`` and
    shapes no wider than ``max_ratio``; the square one is among them."""
    area = resolution * resolution
    square = max(multiple, resolution // multiple * multiple)
    sizes = {(square, square)}
    for width in range(multiple, int(resolution * math.sqrt(max_ratio)) + 1, multiple):
        height = area // width // multiple * multiple
        if height >= multiple and max(width / height, height / width) <= max_ratio:
            sizes.add((width, height))
    return sorted(sizes)


def nearest_size(width: int, height: int, sizes: Sequence[Size]) -> Size:
    """The bucket whose shape (by log aspect ratio) is nearest ``width`` x ``height``'s."""
    shape = math.log(width / height)
    return min(sizes, key=lambda size: (abs(math.log(size[0] / size[1]) - shape), size))


@dataclass
class Buckets:
    """Each sample's bucket at one resolution: ``size_of[key]`` is its (width, height)."""

    resolution: int
    multiple: int
    size_of: dict[str, Size]

    def counts(self) -> dict[str, int]:
        tally = Counter(self.size_of.values())
        return {f"{w}x{h}": tally[(w, h)] for w, h in sorted(tally)}

    def describe(self) -> str:
        counts = self.counts()
        listed = ", ".join(f"{size} ({n})" for size, n in counts.items())
        return f"{len(counts)} aspect bucket{'s' if len(counts) > 1 else ''}: {listed}"

    def record(self) -> dict:
        return {
            "resolution": self.resolution,
            "multiple": self.multiple,
            "buckets": self.counts(),
            "samples": {key: f"{w}x{h}" for key, (w, h) in self.size_of.items()},
        }


def assign_buckets(
    image_sizes: Mapping[str, Size | None], resolution: int, multiple: int
) -> Buckets:
    """Every sample's bucket, from its image's size by key
    (:func:`~emu_cli.data.dataset.image_sizes`); an unreadable one is given the square bucket
    (the trainer skips it, and shows another image at that size instead)."""
    sizes = bucket_sizes(resolution, multiple)
    square = max(multiple, resolution // multiple * multiple)
    size_of = {
        key: nearest_size(*found, sizes) if found else (square, square)
        for key, found in image_sizes.items()
    }
    return Buckets(resolution, multiple, size_of)


def epoch_batches(groups: list[list[int]], global_batch: int, seed: int, epoch: int) -> list:
    """One epoch's global batches: each bucket's positions shuffled and cut into batches (the
    last one filled up from the bucket's start), then all batches shuffled together."""
    rng = sample_generator(seed, 2_000_003, epoch)
    batches = []
    for members in groups:
        order = rng.permutation(np.asarray(members))
        count = math.ceil(len(order) / global_batch)
        filled = np.resize(order, count * global_batch)
        batches += [filled[i * global_batch : (i + 1) * global_batch] for i in range(count)]
    return [batches[i] for i in rng.permutation(len(batches))]


class BucketBatches(torch.utils.data.Sampler):
    """:class:`~emu_cli.data.dataset.StepBatches` for buckets: global batch ``b`` is batch
    ``b mod n`` of epoch ``b // n`` (``n`` batches an epoch), all of one bucket; process
    ``rank`` takes its contiguous slice."""

    def __init__(
        self,
        groups: list[list[int]],
        per_process: int,
        world: int,
        rank: int,
        seed: int,
        first: int,
        count: int,
    ):
        self.groups = [g for g in groups if g]
        self.size = sum(len(g) for g in self.groups)
        self.per_process, self.world, self.rank = per_process, world, rank
        self.seed, self.first, self.count = seed, first, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[list[int]]:
        global_batch = self.per_process * self.world
        per_epoch = sum(math.ceil(len(g) / global_batch) for g in self.groups)
        cached: dict[int, list] = {}
        for batch in range(self.first, self.first + self.count):
            epoch, number = divmod(batch, per_epoch)
            if epoch not in cached:
                cached = {epoch: epoch_batches(self.groups, global_batch, self.seed, epoch)}
            chosen = cached[epoch][number]
            mine = chosen[self.rank * self.per_process : (self.rank + 1) * self.per_process]
            yield [int(position) + epoch * self.size for position in mine]


def bucket_groups(index: SampleIndex, buckets: Buckets) -> list[list[int]]:
    """The positions of ``index``'s samples, by bucket (buckets in size order)."""
    groups: dict[Size, list[int]] = {}
    for position, sample in enumerate(index.samples):
        groups.setdefault(buckets.size_of[sample.key], []).append(position)
    return [groups[size] for size in sorted(groups)]
