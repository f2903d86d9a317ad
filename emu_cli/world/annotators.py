"""Simulated annotators: noisy readings of the pixel judges, writing to the same store as people.

Human filtering (the paper's 200K -> 20K -> 2K):
- generalists (stage 1, recall): perceive appeal with noise sd ``GENERALIST_NOISE`` and keep about
  ``KEEP_RATE`` of what they see; each image is seen by one generalist.
- specialists (stage 2, precision): perceive appeal with noise sd ``SPECIALIST_NOISE``, fill in the
  guideline checklist from the judge's category scores, and keep about ``KEEP_RATE`` of what they
  see, only images whose checklist passes.
Side-by-side evaluation (the paper's protocol):
- 5 visual-appeal annotators: caption hidden; each perceives both images' appeal with noise sd
  ``VOTE_NOISE``; closer than ``TIE_MARGIN`` is a tie.
- 3 faithfulness annotators: caption shown; each reads the faithfulness judge and misreads an
  image with probability ``MISREAD``; A, B, Both or Neither.
Ratings (as AVA's, which trained LAION's aesthetic predictor):
- ``RATERS`` people each rate an image from 1 to 10, a reading of its appeal with noise sd
  ``RATING_NOISE`` (in appeal units); the image's rating is their mean.
Every draw is seeded by (seed, annotator, item), so a simulation is reproducible.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from emu_cli.human.store import CHECKLIST, AnnotationStore
from emu_cli.plugin.panel import FilteringResult, Pair
from emu_cli.world.factors import CATEGORIES
from emu_cli.world.judges import WorldJudges

GENERALIST_NOISE = 0.06
SPECIALIST_NOISE = 0.02
KEEP_RATE = 0.1
CHECKLIST_BAR = 0.45  # a category scored below this fails its checklist item
VOTE_NOISE = 0.03
TIE_MARGIN = 0.02
MISREAD = 0.05
APPEAL_ANNOTATORS = 5
FAITHFULNESS_ANNOTATORS = 3
RATERS = 10
RATING_NOISE = 0.08
# The checklist items read the judge's guideline categories.
CHECKLIST_CATEGORY = dict(
    zip(CHECKLIST[:4], ("composition", "lighting", "color", "background"), strict=True)
)


def _rng(seed: int, annotator: str, item: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{annotator}/{item}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def simulate_filtering(
    store: AnnotationStore,
    stage: str,
    images: dict[str, Image.Image],
    judges: WorldJudges,
    *,
    annotators: int = 4,
    seed: int = 0,
    keep_rate: float = KEEP_RATE,
) -> FilteringResult:
    """One stage of human filtering over ``images`` (item key -> image); returns what it kept.
    ``keep_rate``: the share of what they see that annotators aim to keep (the paper's stages
    keep about a tenth each; a small pool needs more to leave a set worth tuning on)."""
    if not 0 < keep_rate <= 1:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    if stage not in ("generalist", "specialist"):
        raise ValueError(f"stage must be generalist or specialist, got '{stage}'")
    keys = sorted(images)
    if not keys:
        return FilteringResult(0, [])
    judgement = judges.judge([images[k] for k in keys])
    noise = GENERALIST_NOISE if stage == "generalist" else SPECIALIST_NOISE
    names = [f"simulated-{stage}-{i}" for i in range(annotators)]
    for name in names:
        store.add_annotator(name, "simulated")
    perceived, checklists = [], []
    for i, key in enumerate(keys):
        rng = _rng(seed, names[i % annotators], key)
        perceived.append(judgement.appeal[i] + rng.normal(0, noise))
        scores = dict(zip(CATEGORIES, judgement.categories[i], strict=True))
        checklist = {
            item: bool(scores[category] + rng.normal(0, noise) >= CHECKLIST_BAR)
            for item, category in CHECKLIST_CATEGORY.items()
        }
        checklists.append(checklist)
    perceived = np.array(perceived)
    # The bar each annotator holds, calibrated to keep about keep_rate of a typical batch.
    bar = np.quantile(perceived, 1 - keep_rate)
    decisions: dict[str, list] = {name: [] for name in names}
    kept = []
    for i, key in enumerate(keys):
        keep = bool(perceived[i] >= bar)
        checklist = None
        if stage == "specialist":
            checklist = {**checklists[i], "subjective": keep}
            keep = keep and all(checklists[i].values())
        decisions[names[i % annotators]].append((key, keep, checklist))
        if keep:
            kept.append(key)
    for name, rows in decisions.items():
        store.decide_many(stage, name, rows)
    return FilteringResult(len(keys), kept)


def simulate_ratings(
    images: dict[str, Image.Image], judges: WorldJudges, *, seed: int = 0
) -> dict[str, float]:
    """Mean 1-10 rating of each image (item key -> image) by ``RATERS`` simulated raters."""
    keys = sorted(images)
    if not keys:
        return {}
    appeal = judges.appeal([images[k] for k in keys])
    ratings = {}
    for key, value in zip(keys, appeal, strict=True):
        votes = [
            np.clip(1 + 9 * (value + _rng(seed, f"rater-{r}", key).normal(0, RATING_NOISE)), 1, 10)
            for r in range(RATERS)
        ]
        ratings[key] = round(float(np.mean(votes)), 3)
    return ratings


def rate_pool(data, count: int, *, seed: int = 0) -> dict[str, float]:
    """Ratings of ``count`` readable samples of a pool, drawn at random (seeded)."""
    from emu_cli.data import index_dataset
    from emu_cli.data.dataset import read_image

    if count < 1:
        raise ValueError(f"--num-images must be at least 1, got {count}")
    index = index_dataset(data)
    order = np.random.default_rng(seed).permutation(len(index))
    images: dict[str, Image.Image] = {}
    for position in order:
        if len(images) == count:
            break
        sample = index.samples[position]
        try:
            images[sample.key] = read_image(sample)
        except Exception:  # unreadable samples are simply not rated
            continue
    return simulate_ratings(images, WorldJudges.load(), seed=seed)


def simulate_votes(
    store: AnnotationStore, pairs: list[Pair], judges: WorldJudges, *, seed: int = 0
) -> None:
    """Cast the paper's votes on each pair: 5 appeal and 3 faithfulness annotators.

    The comparisons must already be in the store (``add_comparison``)."""
    if not pairs:
        return
    images = [p.image_a for p in pairs] + [p.image_b for p in pairs]
    appeal = judges.appeal(images)
    faithful = judges.faithfulness(images, [p.prompt for p in pairs] * 2)["all"]
    count = len(pairs)
    appeal_names = [f"simulated-appeal-{i}" for i in range(APPEAL_ANNOTATORS)]
    faith_names = [f"simulated-faithfulness-{i}" for i in range(FAITHFULNESS_ANNOTATORS)]
    for name in appeal_names + faith_names:
        store.add_annotator(name, "simulated")
    with store.transaction():
        for i, pair in enumerate(pairs):
            for name in appeal_names:
                rng = _rng(seed, name, pair.comparison)
                left = "a" if rng.random() < 0.5 else "b"
                a, b = (
                    appeal[i] + rng.normal(0, VOTE_NOISE),
                    appeal[count + i] + rng.normal(0, VOTE_NOISE),
                )
                choice = "tie" if abs(a - b) < TIE_MARGIN else ("a" if a > b else "b")
                store.vote(pair.comparison, "appeal", name, left, choice)
            for name in faith_names:
                rng = _rng(seed, name, pair.comparison)
                left = "a" if rng.random() < 0.5 else "b"
                a = bool(faithful[i]) != (rng.random() < MISREAD)
                b = bool(faithful[count + i]) != (rng.random() < MISREAD)
                choice = {
                    (True, False): "a",
                    (False, True): "b",
                    (True, True): "both",
                    (False, False): "neither",
                }[(a, b)]
                store.vote(pair.comparison, "faithfulness", name, left, choice)
