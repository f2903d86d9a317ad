"""How good the judges are, measured on freshly drawn held-out data with known truth.

- appeal: Spearman rank correlation between the judged and the true appeal of junk-free pool
  samples (drawn exactly as ``emu data synth`` draws them, from a seed the judges never saw);
- faithfulness: accuracy per attribute on clean, well-made renders.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from emu_cli.world.concepts import BACKGROUNDS, COLORS, SUBJECTS, caption
from emu_cli.world.factors import clean_factors
from emu_cli.world.judges import WorldJudges
from emu_cli.world.render import render
from emu_cli.world.synth import draw_sample

HELD_OUT_SEED = 90_001  # training uses seeds 0.. of its own stream; this one is never trained on


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation (continuous scores: ties are negligible)."""
    rank_x = np.argsort(np.argsort(x)).astype(float)
    rank_y = np.argsort(np.argsort(y)).astype(float)
    return float(np.corrcoef(rank_x, rank_y)[0, 1])


def held_out_pool(
    count: int, size: int, seed: int = HELD_OUT_SEED
) -> tuple[list[Image.Image], np.ndarray]:
    """``count`` junk-free pool samples at ``size`` px and their true appeal."""
    images, appeal, number = [], [], 0
    while len(images) < count:
        drawn = draw_sample(seed, number, size)
        number += 1
        if drawn.metadata["junk"]:
            continue
        images.append(Image.open(io.BytesIO(drawn.data)).convert("RGB"))
        appeal.append(drawn.metadata["appeal"])
    return images, np.array(appeal)


def clean_renders(
    count: int, size: int, seed: int = HELD_OUT_SEED
) -> tuple[list[Image.Image], list[dict]]:
    images, truths = [], []
    for number in range(count):
        rng = np.random.default_rng([seed, number, 11])
        truth = {
            "subject": SUBJECTS[number % len(SUBJECTS)],
            "color": list(COLORS)[int(rng.integers(len(COLORS)))],
            "background": list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))],
        }
        images.append(
            render(
                truth["subject"], truth["color"], truth["background"], size, clean_factors(rng), rng
            )
        )
        truths.append(truth)
    return images, truths


def validate_appeal(judges: WorldJudges, size: int, count: int = 2000) -> float:
    images, truth = held_out_pool(count, size)
    return spearman(judges.appeal(images), truth)


def validate_faithfulness(judges: WorldJudges, size: int, count: int = 800) -> dict[str, float]:
    images, truths = clean_renders(count, size)
    predicted = judges.judge(images).attributes
    accuracy = {
        name: float(np.mean([p == t[name] for p, t in zip(predicted[name], truths, strict=True)]))
        for name in ("subject", "color", "background")
    }
    captions = [caption(t["subject"], t["color"], t["background"]) for t in truths]
    accuracy["caption_match"] = float(judges.faithfulness(images, captions)["all"].mean())
    return accuracy
