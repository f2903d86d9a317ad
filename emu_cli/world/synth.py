"""``emu data synth``: the world's image-caption pool, with known quality and known junk.

Sample ``i`` depends only on (seed, i): the pool is the same however many processes draw it.
Each sample is first *planned* (concept, caption, factors, junk) with cheap random draws, then
rendered. A duplicate re-renders its source's plan, so exact duplicates are byte-identical
without any process knowing what another wrote. The junk rates are ``JUNK_RATES`` below,
documented in docs/world.md. A *clean* set has no junk and only well-made pictures (the ones
the faithfulness judge is validated on): what a generator can learn with the pool's noise
taken away.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from emu_cli.data.export import replacing
from emu_cli.data.origin import mark_world_pool
from emu_cli.world.concepts import BACKGROUNDS, CAPTION_TEMPLATES, COLORS, SUBJECTS, caption
from emu_cli.world.factors import (
    Factors,
    category_scores,
    clean_factors,
    sample_factors,
    true_appeal,
)
from emu_cli.world.render import overlay_text, render

FORMATS = ("imagefolder", "webdataset")
SHARD_SIZE = 1000
# Rates of the web's junk in the pool. Duplicates and near duplicates exclude each other, and
# so do tiny images and extreme aspect ratios.
JUNK_RATES = {
    "overlaid_text": 0.08,
    "wrong_caption": 0.08,
    "tiny": 0.03,
    "extreme_aspect": 0.03,
    "duplicate": 0.03,
    "near_duplicate": 0.03,
}
# A "needle" is junk-free with a true appeal at least this high: about 1.6 % of the pool.
NEEDLE_APPEAL = 0.8
SLOGANS = (
    "SALE 50% OFF",
    "BEST PRICE",
    "stock photo",
    "WATERMARK",
    "www.example.com",
    "LIMITED OFFER",
    "(c) photo agency",
    "FREE SHIPPING",
    "CLICK HERE",
    "NEW!",
)


@dataclass(frozen=True)
class Plan:
    number: int
    subject: str
    color: str
    background: str
    template: int
    factors: Factors
    width: int
    height: int
    caption_attributes: tuple[str, str, str]
    junk: tuple[str, ...] = ()
    slogan: str | None = None
    source: int | None = None  # the sample a (near) duplicate copies


@dataclass(frozen=True)
class Drawn:
    key: str
    data: bytes
    metadata: dict[str, Any] = field(default_factory=dict)


def _choice(rng: np.random.Generator, options) -> Any:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def plan_sample(seed: int, number: int, size: int, clean: bool = False) -> Plan:
    rng = np.random.default_rng([seed, number, 1])
    subject, color, background = (
        _choice(rng, SUBJECTS),
        _choice(rng, COLORS),
        _choice(rng, BACKGROUNDS),
    )
    template = int(rng.integers(len(CAPTION_TEMPLATES)))
    if clean:
        said = (subject, color, background)
        return Plan(
            number, subject, color, background, template, clean_factors(rng), size, size, said
        )
    factors = sample_factors(rng)
    draws = rng.random(6)
    junk: list[str] = []
    duplicate = None
    if number > 0 and draws[0] < JUNK_RATES["duplicate"]:
        junk.append("duplicate")
        duplicate = int(rng.integers(0, number))
    elif number > 0 and draws[0] < JUNK_RATES["duplicate"] + JUNK_RATES["near_duplicate"]:
        junk.append("near_duplicate")
        duplicate = int(rng.integers(0, number))
    if duplicate is not None:
        source = plan_sample(seed, duplicate, size)
        while source.source is not None:  # copy the original, not a copy of it
            source = plan_sample(seed, source.source, size)
        new_template = int(rng.integers(len(CAPTION_TEMPLATES)))
        return replace(
            source,
            number=number,
            template=new_template,
            junk=(*source.junk, *junk),
            source=source.number,
        )
    width = height = size
    if draws[1] < JUNK_RATES["tiny"]:
        junk.append("tiny")
        width = height = max(8, int(size * rng.uniform(0.12, 0.4)))
    elif draws[1] < JUNK_RATES["tiny"] + JUNK_RATES["extreme_aspect"]:
        junk.append("extreme_aspect")
        ratio = rng.uniform(3.2, 4.5)  # beyond DataComp's 3:1 limit
        width, height = (
            (int(size * ratio), size) if rng.random() < 0.5 else (size, int(size * ratio))
        )
    slogan = None
    if draws[2] < JUNK_RATES["overlaid_text"]:
        junk.append("overlaid_text")
        slogan = _choice(rng, SLOGANS)
    said = (subject, color, background)
    if draws[3] < JUNK_RATES["wrong_caption"]:
        junk.append("wrong_caption")
        if rng.random() < 0.5:
            said = (_choice(rng, [s for s in SUBJECTS if s != subject]), color, background)
        else:
            said = (subject, _choice(rng, [c for c in COLORS if c != color]), background)
    return Plan(
        number,
        subject,
        color,
        background,
        template,
        factors,
        width,
        height,
        said,
        tuple(junk),
        slogan,
    )


def draw_sample(seed: int, number: int, size: int, clean: bool = False) -> Drawn:
    plan = plan_sample(seed, number, size, clean)
    original = plan.source if plan.source is not None else plan.number
    rng = np.random.default_rng([seed, original, 2])  # the source's rendering draws
    image = render(
        plan.subject, plan.color, plan.background, (plan.width, plan.height), plan.factors, rng
    )
    if plan.slogan:
        image = overlay_text(image, plan.slogan, rng)
    quality = plan.factors.jpeg_quality
    if "near_duplicate" in plan.junk:  # recompressed and slightly cropped, as reposts are
        near = np.random.default_rng([seed, number, 3])
        crop = max(1, int(min(image.size) * near.uniform(0.02, 0.06)))
        image = image.crop((crop, crop, image.width - crop, image.height - crop)).resize(image.size)
        quality = int(np.clip(quality + near.integers(-15, 16), 20, 95))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    scores = category_scores(plan.factors, plan.color, plan.background)
    appeal = true_appeal(plan.factors, plan.color, plan.background)
    metadata = {
        "text": caption(*plan.caption_attributes, plan.template),
        "subject": plan.subject,
        "color": plan.color,
        "background": plan.background,
        "caption_attributes": dict(
            zip(("subject", "color", "background"), plan.caption_attributes, strict=True)
        ),
        "template": plan.template,
        "width": image.width,
        "height": image.height,
        "factors": plan.factors.to_dict(),
        "categories": {k: round(v, 4) for k, v in scores.items()},
        "appeal": round(appeal, 4),
        "junk": list(plan.junk),
        "duplicate_of": f"{original:08d}" if plan.source is not None else None,
        "needle": not plan.junk and appeal >= NEEDLE_APPEAL,
    }
    return Drawn(f"{number:08d}", buffer.getvalue(), metadata)


def _draw_chunk(arguments: tuple[int, range, int, bool]) -> list[Drawn]:
    seed, numbers, size, clean = arguments
    return [draw_sample(seed, n, size, clean) for n in numbers]


def _drawn(n: int, seed: int, size: int, workers: int, clean: bool) -> Iterator[Drawn]:
    chunk = 64
    jobs = [(seed, range(s, min(n, s + chunk)), size, clean) for s in range(0, n, chunk)]
    if workers <= 1:
        for job in jobs:
            yield from _draw_chunk(job)
        return
    with ProcessPoolExecutor(workers) as pool:
        for drawn in pool.map(_draw_chunk, jobs):
            yield from drawn


def _write_shard(path: Path, drawn_samples: list[Drawn]) -> None:
    with tarfile.open(path, "w") as shard:
        for drawn in drawn_samples:
            for suffix, data in (
                ("jpg", drawn.data),
                ("txt", drawn.metadata["text"].encode()),
                ("json", json.dumps(drawn.metadata).encode()),
            ):
                member = tarfile.TarInfo(f"{drawn.key}.{suffix}")
                member.size = len(data)
                shard.addfile(member, io.BytesIO(data))


def synthesize(
    n: int,
    out: Path,
    *,
    seed: int = 0,
    size: int = 64,
    format: str = "imagefolder",
    workers: int | None = None,
    clean: bool = False,
    report: bool = True,
) -> Path:
    """Write ``n`` samples to ``out``; with ``report``, also a contact sheet and statistics.

    ``clean``: junk-free, well-made pictures only (see the module's docstring).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got '{format}'")
    if n < 1:
        raise ValueError(f"--num-images must be at least 1, got {n}")
    if size < 16:
        raise ValueError(f"--size must be at least 16 pixels, got {size}")
    out = Path(out)
    workers = workers or min(os.cpu_count() or 1, 8)
    statistics = Statistics(clean=clean)
    with replacing(out) as folder:
        progress = tqdm(total=n, desc="synth", unit="img", disable=n < 500)
        if format == "imagefolder":
            (folder / "images").mkdir()
            with open(folder / "metadata.jsonl", "w", encoding="utf-8") as metadata:
                for drawn in _drawn(n, seed, size, workers, clean):
                    name = f"images/{drawn.key}.jpg"
                    (folder / name).write_bytes(drawn.data)
                    metadata.write(json.dumps({"file_name": name, **drawn.metadata}) + "\n")
                    statistics.add(drawn)
                    progress.update(1)
        else:
            pending: list[Drawn] = []
            for index, drawn in enumerate(_drawn(n, seed, size, workers, clean)):
                pending.append(drawn)
                statistics.add(drawn)
                if len(pending) == SHARD_SIZE or index == n - 1:
                    _write_shard(folder / f"{index // SHARD_SIZE:05d}.tar", pending)
                    progress.update(len(pending))
                    pending = []
        progress.close()
        if report:
            statistics.write(folder, seed=seed, size=size)
        # what tells a model trained on it (and only such a model) to use the world's judge
        record = {"made_by": "emu data synth", "n": n, "seed": seed, "size": size, "clean": clean}
        mark_world_pool(folder, record)
    return out


class Statistics:
    """Counts and a contact sheet of a generated set, for people and programs."""

    def __init__(self, *, clean: bool, sheet_samples: int = 64):
        self.clean = clean  # a clean set documents no junk
        self.count = 0
        self.junk: Counter[str] = Counter()
        self.concepts: Counter[str] = Counter()
        self.needles = 0
        self.appeals: list[float] = []
        self.sheet: list[Drawn] = []
        self.sheet_samples = sheet_samples

    def add(self, drawn: Drawn) -> None:
        self.count += 1
        self.junk.update(drawn.metadata["junk"])
        self.concepts[drawn.metadata["subject"]] += 1
        self.needles += drawn.metadata["needle"]
        self.appeals.append(drawn.metadata["appeal"])
        if len(self.sheet) < self.sheet_samples:
            self.sheet.append(drawn)

    def table(self) -> dict[str, Any]:
        appeals = np.array(self.appeals)
        return {
            "samples": self.count,
            "clean": self.clean,
            "needles": self.needles,
            "needle_rate": round(self.needles / self.count, 4),
            "junk_rates": {k: round(self.junk[k] / self.count, 4) for k in JUNK_RATES},
            "junk_rates_documented": dict.fromkeys(JUNK_RATES, 0.0) if self.clean else JUNK_RATES,
            "appeal": {
                "mean": round(float(appeals.mean()), 4),
                "quartiles": [round(float(q), 4) for q in np.quantile(appeals, [0.25, 0.5, 0.75])],
            },
            "subjects": dict(sorted(self.concepts.items())),
        }

    def write(self, out: Path, *, seed: int, size: int) -> None:
        from PIL import Image

        from emu_cli.images import make_grid

        table = {"seed": seed, "size": size, **self.table()}
        (out / "stats.json").write_text(json.dumps(table, indent=2))
        lines = [
            f"# {'Clean set' if self.clean else 'Synthetic pool'}: {self.count} samples, "
            f"seed {seed}, {size} px",
            "",
            "| measure | value | documented |",
            "|---|---|---|",
            f"| needles (appeal >= {NEEDLE_APPEAL}, no junk) | {table['needle_rate']:.2%} "
            f"| {'-' if self.clean else 'about 1.6%'} |",
        ]
        lines += [
            f"| {k} | {table['junk_rates'][k]:.2%} | {v:.0%} |"
            for k, v in table["junk_rates_documented"].items()
        ]
        (out / "stats.md").write_text("\n".join(lines) + "\n")
        tiles = [Image.open(io.BytesIO(d.data)).convert("RGB").resize((96, 96)) for d in self.sheet]
        make_grid(tiles, columns=8).save(out / "contact_sheet.png")
