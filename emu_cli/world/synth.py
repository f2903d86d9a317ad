"""``emu data synth``: write the world's image-caption pairs as an image folder or WebDataset.

Sample ``i`` depends only on (seed, i), so the output is the same however many processes draw it.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from emu_cli.world.concepts import BACKGROUNDS, CAPTION_TEMPLATES, COLORS, SUBJECTS, caption
from emu_cli.world.render import render

FORMATS = ("imagefolder", "webdataset")
SHARD_SIZE = 1000


@dataclass(frozen=True)
class Drawn:
    key: str
    png: bytes
    metadata: dict[str, Any]


def draw_sample(seed: int, number: int, size: int) -> Drawn:
    rng = np.random.default_rng([seed, number])
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    color = list(COLORS)[rng.integers(len(COLORS))]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    template = int(rng.integers(len(CAPTION_TEMPLATES)))
    scale = float(rng.uniform(0.2, 0.35))
    center = tuple(float(c) for c in rng.uniform(0.5 - 0.15, 0.5 + 0.15, size=2))
    angle = float(rng.uniform(-0.3, 0.3))
    image = render(subject, color, background, size, center=center, scale=scale, angle=angle)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    metadata = {
        "text": caption(subject, color, background, template),
        "subject": subject,
        "color": color,
        "background": background,
        "center": center,
        "scale": scale,
        "angle": angle,
    }
    return Drawn(f"{number:08d}", buffer.getvalue(), metadata)


def _draw_chunk(arguments: tuple[int, range, int]) -> list[Drawn]:
    seed, numbers, size = arguments
    return [draw_sample(seed, n, size) for n in numbers]


def _drawn(n: int, seed: int, size: int, workers: int) -> Iterator[Drawn]:
    chunk = 64
    jobs = [(seed, range(s, min(n, s + chunk)), size) for s in range(0, n, chunk)]
    if workers <= 1:
        for job in jobs:
            yield from _draw_chunk(job)
        return
    with ProcessPoolExecutor(workers) as pool:
        for drawn in pool.map(_draw_chunk, jobs):
            yield from drawn


def synthesize(
    n: int,
    out: Path,
    *,
    seed: int = 0,
    size: int = 64,
    format: str = "imagefolder",
    workers: int | None = None,
) -> Path:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got '{format}'")
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(os.cpu_count() or 1, 8)
    progress = tqdm(total=n, desc="synth", unit="img", disable=n < 500)
    samples = _drawn(n, seed, size, workers)
    if format == "imagefolder":
        (out / "images").mkdir(exist_ok=True)
        with open(out / "metadata.jsonl", "w", encoding="utf-8") as metadata:
            for drawn in samples:
                name = f"images/{drawn.key}.png"
                (out / name).write_bytes(drawn.png)
                metadata.write(json.dumps({"file_name": name, **drawn.metadata}) + "\n")
                progress.update(1)
    else:
        shard_samples: dict[int, list[Drawn]] = {}
        for index, drawn in enumerate(samples):
            shard_samples.setdefault(index // SHARD_SIZE, []).append(drawn)
            if len(shard_samples[index // SHARD_SIZE]) == SHARD_SIZE or index == n - 1:
                _write_shard(
                    out / f"{index // SHARD_SIZE:05d}.tar", shard_samples.pop(index // SHARD_SIZE)
                )
                progress.update(SHARD_SIZE if index != n - 1 else (n - 1) % SHARD_SIZE + 1)
    progress.close()
    return out


def _write_shard(path: Path, drawn_samples: list[Drawn]) -> None:
    with tarfile.open(path, "w") as shard:
        for drawn in drawn_samples:
            for suffix, data in (
                ("png", drawn.png),
                ("txt", drawn.metadata["text"].encode()),
                ("json", json.dumps(drawn.metadata).encode()),
            ):
                member = tarfile.TarInfo(f"{drawn.key}.{suffix}")
                member.size = len(data)
                shard.addfile(member, io.BytesIO(data))
