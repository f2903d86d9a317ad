"""Judges that look only at pixels: visual appeal along the guideline categories, and whether an
image shows what a caption of the world says (subject, color, background).

One small timm ResNet reads a 64x64 image (smaller and larger images are resized) and predicts
the subject, color and background, and a score per guideline category; the appeal is the
documented formula of :mod:`emu_cli.world.factors` applied to the predicted category scores.
It is trained on rendered scenes by ``emu data train-judges``, deterministically; the weights that
the project ships were made by that command with its defaults (see docs/world.md).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from emu_cli.errors import EmuError
from emu_cli.world.concepts import BACKGROUNDS, COLORS, SUBJECTS
from emu_cli.world.factors import (
    CATEGORIES,
    appeal_from_categories,
    category_scores,
    clean_factors,
    in_frame,
    sample_factors,
)
from emu_cli.world.render import render

INPUT = 64
ATTRIBUTES = {"subject": SUBJECTS, "color": tuple(COLORS), "background": tuple(BACKGROUNDS)}
SHIPPED = Path(__file__).parent / "weights" / "judges.safetensors"


class JudgeNet(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        from timm.models.resnet import BasicBlock, ResNet

        channels = (width, width * 2, width * 4, width * 8)
        self.backbone = ResNet(
            BasicBlock,
            [1, 1, 1, 1],
            channels=channels,
            num_classes=0,
            global_pool="",
            in_chans=5,  # RGB and two coordinate channels
            stem_width=width,
            output_stride=16,
        )
        # The final 4x4 map, flattened rather than pooled: composition depends on where the
        # subject is, which pooling would throw away.
        features = channels[-1] * 4 * 4
        self.heads = nn.ModuleDict(
            {name: nn.Linear(features, len(values)) for name, values in ATTRIBUTES.items()}
        )
        self.categories = nn.Linear(features, len(CATEGORIES))
        self.config = {"width": width}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # Coordinate channels (CoordConv): composition is about where the subject is.
        count, _, height, width = images.shape
        ys = torch.linspace(-1, 1, height).view(1, 1, height, 1).expand(count, 1, height, width)
        xs = torch.linspace(-1, 1, width).view(1, 1, 1, width).expand(count, 1, height, width)
        features = self.backbone(torch.cat([images, xs, ys], dim=1)).flatten(1)
        outputs = {name: head(features) for name, head in self.heads.items()}
        outputs["categories"] = torch.sigmoid(self.categories(features))
        return outputs


def to_input(images: list[Image.Image]) -> torch.Tensor:
    """Any images to the judge's input: RGB, squashed to 64x64, in [-1, 1]."""
    arrays = [
        np.asarray(
            image.convert("RGB").resize((INPUT, INPUT), Image.Resampling.BILINEAR), dtype=np.float32
        )
        for image in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


_CAPTION_WORDS = {
    "subject": {s: re.compile(rf"\b{s}\b") for s in SUBJECTS},
    "color": {c: re.compile(rf"\b{c}\b") for c in COLORS},
    "background": {b: re.compile(rf"\b{b}\b") for b in BACKGROUNDS},
}


def parse_caption(caption: str) -> dict[str, str | None]:
    """The subject, color and background a caption of the world names (None where it names none)."""
    text = caption.lower()
    return {
        attribute: next((v for v, word in words.items() if word.search(text)), None)
        for attribute, words in _CAPTION_WORDS.items()
    }


@dataclass
class Judgement:
    appeal: np.ndarray  # (N,) in [0, 1]
    categories: np.ndarray  # (N, 5) per guideline category
    attributes: dict[str, list[str]]  # predicted subject, color, background per image
    probabilities: dict[str, np.ndarray]  # per attribute, (N, values): what the votes come from


class WorldJudges:
    """The trained judges. ``WorldJudges.load()`` reads the shipped weights."""

    def __init__(self, net: JudgeNet):
        self.net = net.eval()

    @classmethod
    def load(cls, path: Path | None = None) -> WorldJudges:
        from safetensors.torch import load_model

        path = Path(path or SHIPPED)
        config_path = path.with_suffix(".json")
        if not path.is_file() or not config_path.is_file():
            raise FileNotFoundError(
                f"judge weights '{path}' (and its .json) not found; make them with "
                "`emu data train-judges --out PATH`"
            )
        net = JudgeNet(**json.loads(config_path.read_text())["config"])
        load_model(net, str(path))
        return cls(net)

    @torch.no_grad()
    def judge(self, images: list[Image.Image], batch_size: int = 256) -> Judgement:
        categories, probabilities = [], {name: [] for name in ATTRIBUTES}
        for start in range(0, len(images), batch_size):
            batch = to_input(images[start : start + batch_size])
            # Every judged quality is the same in a mirror image: average both readings.
            outputs, mirrored = self.net(batch), self.net(batch.flip(3))
            categories.append(((outputs["categories"] + mirrored["categories"]) / 2).numpy())
            for name in ATTRIBUTES:
                both = (outputs[name].softmax(1) + mirrored[name].softmax(1)) / 2
                probabilities[name].append(both.numpy())
        scores = np.concatenate(categories)
        stacked = {name: np.concatenate(parts) for name, parts in probabilities.items()}
        attributes = {
            name: [values[i] for i in stacked[name].argmax(1)]
            for name, values in ATTRIBUTES.items()
        }
        return Judgement(appeal_from_categories(scores), scores, attributes, stacked)

    def caption_log_likelihood(self, images: list[Image.Image], captions: list[str]) -> np.ndarray:
        """How well each caption fits its image to the judge: the sum, over the attributes the
        caption names, of the log of the probability the judge gives the named value."""
        probabilities = self.judge(images).probabilities
        scores = np.zeros(len(captions))
        for row, text in enumerate(captions):
            for name, said in parse_caption(text).items():
                if said is not None:
                    scores[row] += np.log(probabilities[name][row, ATTRIBUTES[name].index(said)])
        return scores

    def appeal(self, images: list[Image.Image]) -> np.ndarray:
        return self.judge(images).appeal

    def faithfulness(
        self, images: list[Image.Image], captions: list[str], judgement: Judgement | None = None
    ) -> dict[str, np.ndarray]:
        """Per attribute, whether each image shows what its caption names (captions that name
        no value of an attribute count as matching it); ``all`` when every attribute matches.
        ``judgement``: these images' judgement when the caller already has it."""
        predicted = (judgement or self.judge(images)).attributes
        result = {}
        for name in ATTRIBUTES:
            said = [parse_caption(c)[name] for c in captions]
            result[name] = np.array(
                [s is None or s == p for s, p in zip(said, predicted[name], strict=True)]
            )
        result["all"] = np.logical_and.reduce([result[n] for n in ATTRIBUTES])
        return result


# -- training -----------------------------------------------------------------------------------
TRAINING_SIZES = (32, 48, 64, 96)


def training_example(seed: int, number: int) -> tuple[Image.Image, dict[str, Any]]:
    """A rendered scene and its targets. Half are well made (what faithfulness is judged on),
    half are drawn like the pool (what appeal is judged on)."""
    rng = np.random.default_rng([seed, number, 7])
    subject = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    clean = rng.random() < 0.5
    factors = clean_factors(rng) if clean else sample_factors(rng)
    size = TRAINING_SIZES[int(rng.integers(len(TRAINING_SIZES)))]
    image = render(subject, color, background, size, factors, rng)
    if not clean:  # compression, as the pool's images have it
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=factors.jpeg_quality)
        image = Image.open(buffer).convert("RGB")
    # Attributes are learned only where a person could still tell them.
    recognisable = clean or (
        factors.saturation > 0.45
        and abs(factors.exposure) < 1.3
        and factors.scale > 0.1
        and in_frame(factors.center, factors.scale) > 0.5
    )
    scores = category_scores(factors, color, background)
    return image, {
        "subject": SUBJECTS.index(subject),
        "color": list(COLORS).index(color),
        "background": list(BACKGROUNDS).index(background),
        "recognisable": float(recognisable),
        "categories": [scores[c] for c in CATEGORIES],
    }


def _examples(seed: int, numbers: range) -> list:
    return [training_example(seed, n) for n in numbers]


def train_judges(
    out: Path,
    *,
    samples: int = 90_000,
    epochs: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    workers: int = 2,
) -> dict[str, Any]:
    """Train the judges from rendered scenes and save them to ``out`` (.safetensors + .json)."""
    from concurrent.futures import ProcessPoolExecutor

    from safetensors.torch import save_model

    started = time.perf_counter()
    torch.manual_seed(seed)
    chunks = [range(s, min(samples, s + 500)) for s in range(0, samples, 500)]
    with ProcessPoolExecutor(workers) as pool:
        rendered = [
            e
            for chunk in tqdm(
                pool.map(_examples, [seed] * len(chunks), chunks), total=len(chunks), desc="render"
            )
            for e in chunk
        ]
    inputs = to_input([image for image, _ in rendered])
    targets = {name: torch.tensor([t[name] for _, t in rendered]) for name in ATTRIBUTES}
    recognisable = torch.tensor([t["recognisable"] for _, t in rendered])
    categories = torch.tensor([t["categories"] for _, t in rendered], dtype=torch.float32)
    net = JudgeNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(samples / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    progress = tqdm(total=steps, desc="train judges")
    for _ in range(epochs):
        order = torch.randperm(samples, generator=generator)
        for start in range(0, samples, batch_size):
            index = order[start : start + batch_size]
            batch = inputs[index]
            flip = torch.rand(len(index), generator=generator) < 0.5  # mirror: same labels
            batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
            outputs = net(batch)
            weight = recognisable[index]
            attribute_loss = sum(
                (
                    nn.functional.cross_entropy(outputs[n], targets[n][index], reduction="none")
                    * weight
                ).sum()
                / weight.sum().clamp_min(1)
                for n in ATTRIBUTES
            )
            category_loss = nn.functional.mse_loss(outputs["categories"], categories[index])
            loss = attribute_loss + 50 * category_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
    progress.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(net.eval(), str(out))
    record = {
        "config": net.config,
        "samples": samples,
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    return record


def judge_files(
    paths: list[str], caption: str | None = None, weights: Path | None = None
) -> list[dict[str, Any]]:
    """``emu data judge``: per image file, its appeal, the appeal of each guideline category,
    what it shows, and with ``caption``, whether it shows each attribute the caption names."""
    if caption is not None and not any(parse_caption(caption).values()):
        raise EmuError(
            f"--caption {caption!r} names no subject, color or background of the world, so "
            f"nothing can be judged against it (subjects: {', '.join(ATTRIBUTES['subject'])})"
        )
    pictures = []
    for path in paths:
        try:
            with Image.open(path) as image:
                pictures.append(image.convert("RGB"))
        except OSError as error:  # PIL's UnidentifiedImageError included
            raise EmuError(f"'{path}' is not an image: {error}") from error
    judges = WorldJudges.load(weights)
    judgement = judges.judge(pictures)
    faithful = judges.faithfulness(pictures, [caption] * len(pictures)) if caption else None
    rows = []
    for i, path in enumerate(paths):
        row = {
            "image": path,
            "appeal": round(float(judgement.appeal[i]), 3),
            "categories": {
                c: round(float(v), 3)
                for c, v in zip(CATEGORIES, judgement.categories[i], strict=True)
            },
            **{k: v[i] for k, v in judgement.attributes.items()},
        }
        if faithful is not None:
            row["faithful"] = {k: bool(v[i]) for k, v in faithful.items()}
        rows.append(row)
    return rows
