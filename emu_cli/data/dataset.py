"""Decoded, transformed training samples with deterministic randomness.

Every random choice (crop position is central, so only flip and caption dropout) is drawn from
a generator seeded by (seed, epoch, sample index): the same sample gets the same treatment in a
resumed run, in another process and in another DataLoader worker.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from emu_cli.data.framing import Framing
from emu_cli.data.sources import DatasetError, Sample, SampleIndex

# Refuse decompression bombs as bad samples rather than letting PIL only warn about them.
MAX_IMAGE_PIXELS = 64_000_000
ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the picture a quarter


def read_bytes(sample: Sample) -> bytes:
    """The encoded image of a sample, from its file or from inside its tar shard."""
    with open(sample.path, "rb") as handle:
        if sample.offset >= 0:
            handle.seek(sample.offset)
        data = handle.read(sample.size)
    if len(data) != sample.size:
        raise OSError(f"expected {sample.size} bytes, read {len(data)}")
    return data


def decode(data: bytes) -> Image.Image:
    """Open and fully decode an image, refusing decompression bombs. Raises on any defect."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise OSError(f"image is {image.width}x{image.height}, over {MAX_IMAGE_PIXELS} pixels")
        image.load()
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB with EXIF orientation applied, transparency on white, 16-bit scaled down."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # PIL's own conversion clips 16-bit values at 255 (a white image); scale instead.
        # Mode "I" is how PIL opens some 16-bit files, so it is read as 16-bit too.
        wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray((wide >> 8).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        # Composite transparency on white rather than letting it become black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def read_image(sample: Sample) -> Image.Image:
    """Decode a sample's image as RGB, EXIF orientation applied. Raises on any defect."""
    return to_rgb(decode(read_bytes(sample)))


def read_size(sample: Sample) -> tuple[int, int] | None:
    """(width, height) as training sees the image (EXIF rotation applied), from its header
    alone; None when it cannot be read."""
    try:
        with Image.open(io.BytesIO(read_bytes(sample))) as image:
            width, height = image.size
            rotated = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - unreadable: the trainer skips and reports it
        return None
    return (height, width) if rotated else (width, height)


def image_sizes(samples: Iterable[Sample]) -> dict[str, tuple[int, int] | None]:
    """:func:`read_size` of each sample, by key: read once, for the run's plan and its aspect
    buckets."""
    return {sample.key: read_size(sample) for sample in samples}


def resize_and_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to cover ``size`` (width, height) and take its centre."""
    return ImageOps.fit(image, size, Image.Resampling.BICUBIC)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def sample_generator(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


@dataclass
class TrainingDataset(torch.utils.data.Dataset):
    """Map-style dataset over an index; bad samples are skipped and reported, never raised.

    Each item is ``(image, caption, framing, skipped)``: ``framing`` is how the image was cut
    from its file (:class:`~emu_cli.data.framing.Framing`); ``skipped`` lists ``(key, reason)``
    of the unreadable samples passed over to reach this one, so the trainer can count them
    wherever the decoding ran. Positions past the end continue into later epochs (see StepBatches).
    """

    index: SampleIndex
    resolution: int
    seed: int = 0
    random_flip: bool = True
    caption_dropout: float = 0.0
    # each sample's (width, height) by key: its aspect bucket (emu_cli.data.buckets); None:
    # every image a centre square of ``resolution``
    sizes: dict[str, tuple[int, int]] | None = None

    def size_of(self, sample: Sample) -> tuple[int, int]:
        if self.sizes is None:
            return (self.resolution, self.resolution)
        return self.sizes[sample.key]

    def __len__(self) -> int:
        return len(self.index.samples)

    def __getitem__(
        self, position: int
    ) -> tuple[torch.Tensor, str, Framing, list[tuple[str, str]]]:
        samples = self.index.samples
        epoch, position = divmod(position, len(samples))
        # an unreadable sample's stand-in is shown at its size: a batch is one bucket
        size = self.size_of(samples[position])
        skipped: list[tuple[str, str]] = []
        for attempt in range(len(samples)):
            sample = samples[(position + attempt) % len(samples)]
            try:
                image = read_image(sample)
            except Exception as error:  # PIL raises many types for broken files
                skipped.append((sample.key, f"{type(error).__name__}: {error}"))
                continue
            rng = sample_generator(self.seed, epoch, (position + attempt) % len(samples))
            flip = self.random_flip and rng.random() < 0.5
            caption = "" if rng.random() < self.caption_dropout else sample.caption
            return (
                training_view(image, size, flip),
                caption,
                Framing.centred(image.size, size),
                skipped,
            )
        raise DatasetError(f"dataset '{self.index.source}' has no readable image")

    def variants(self) -> Iterator[tuple[torch.Tensor, str, Framing]]:
        """Every (image, caption, framing) this dataset can yield: each readable sample,
        mirrored or not, with its caption or the dropped one. What an encoding cache warms up
        on."""
        flips = (False, True) if self.random_flip else (False,)
        for sample in self.index.samples:
            try:
                image = read_image(sample)
            except Exception:  # unreadable: __getitem__ skips it too
                continue
            captions = [sample.caption] + ([""] if self.caption_dropout > 0 else [])
            size = self.size_of(sample)
            framing = Framing.centred(image.size, size)
            for flip in flips:
                view = training_view(image, size, flip)
                for caption in captions:
                    yield view, caption, framing

    def variant_count(self) -> int:
        return len(self) * (2 if self.random_flip else 1) * (2 if self.caption_dropout > 0 else 1)


def training_view(image: Image.Image, size: tuple[int, int], flip: bool) -> torch.Tensor:
    """The tensor training sees of an image: resized, centre-cropped, maybe mirrored."""
    image = resize_and_crop(image, size)
    return to_tensor(ImageOps.mirror(image) if flip else image)


def collate(
    items: list,
) -> tuple[torch.Tensor, list[str], list[Framing], list[tuple[str, str]]]:
    images = torch.stack([item[0] for item in items])
    captions = [item[1] for item in items]
    framings = [item[2] for item in items]
    skipped = [entry for item in items for entry in item[3]]
    return images, captions, framings, skipped


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    return sample_generator(seed, 1_000_003, epoch).permutation(size)


class StepBatches(torch.utils.data.Sampler):
    """The positions each optimizer micro-step reads, from ``first_batch`` on.

    Global batch ``b`` covers positions ``[b*G, (b+1)*G)`` of an endless sequence of shuffled
    epochs, where G is the global batch size; process ``rank`` takes its contiguous slice.
    So the data position of a run is just the step number, and a resumed run continues
    exactly where the killed one stopped.
    """

    def __init__(
        self, size: int, per_process: int, world: int, rank: int, seed: int, first: int, count: int
    ):
        self.size, self.per_process, self.world, self.rank = size, per_process, world, rank
        self.seed, self.first, self.count = seed, first, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[list[int]]:
        global_batch = self.per_process * self.world
        orders: dict[int, np.ndarray] = {}
        for batch in range(self.first, self.first + self.count):
            start = batch * global_batch + self.rank * self.per_process
            positions = []
            for flat in range(start, start + self.per_process):
                epoch, offset = divmod(flat, self.size)
                if epoch not in orders:
                    orders = {epoch: epoch_order(self.size, self.seed, epoch)}
                positions.append(int(orders[epoch][offset]) + epoch * self.size)
            yield positions
