"""How good the judges are, measured on freshly drawn held-out data with known truth.

- appeal: Spearman rank correlation between the judged and the true appeal of junk-free pool
  samples (drawn exactly as ``emu data synth`` draws them, from a seed the judges never saw);
- faithfulness: accuracy per attribute on clean, well-made renders.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from emu_cli.stats import spearman
from emu_cli.world.concepts import (
    BACKGROUNDS,
    COLORS,
    HELD_IN_SUBJECTS,
    SUBJECTS,
    caption,
    concept_prompts,
)
from emu_cli.world.factors import clean_factors
from emu_cli.world.judges import WorldJudges
from emu_cli.world.render import render
from emu_cli.world.synth import draw_sample

HELD_OUT_SEED = 90_001  # training uses seeds 0.. of its own stream; this one is never trained on


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


def pool_records(pool: Path) -> list[dict]:
    """Each sample's truth, as ``emu data synth`` wrote it."""
    lines = (Path(pool) / "metadata.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line]


# The junk each filter exists for (the duplicates filter is scored apart: it needs the original).
JUNK_FOR_FILTER = {
    "size": {"tiny", "extreme_aspect"},
    "ocr": {"overlaid_text"},
    "duplicates": {"duplicate", "near_duplicate"},
    "clip_score": {"wrong_caption"},
}


def _rate(hits: int, total: int) -> dict[str, float | int]:
    return {"rate": round(hits / total, 4) if total else float("nan"), "of": total}


def _duplicate_rates(
    rows: pd.DataFrame, truth: dict, here: pd.Series, pool: Path
) -> dict[str, dict]:
    # A duplicate can only be caught when its original reached the duplicate filter too.
    keys_here = set(rows.loc[here, "key"])
    source = rows["key"].map(lambda k: truth[k]["duplicate_of"])
    catchable = here & source.map(lambda s: s is not None and f"images/{s}.jpg" in keys_here)
    rejected = rows["reason"] == "duplicates"
    plain = here & source.isna()
    # Blank images (blown out or black) are duplicates of each other to any eye; count the
    # false rejects among images with visible content apart.
    blank = rows.loc[rejected & plain, "key"].map(lambda k: _is_blank(pool / k))
    return {
        "recall": _rate(int((rejected & catchable).sum()), int(catchable.sum())),
        "false_rejects": _rate(int((rejected & plain).sum()), int(plain.sum())),
        "false_rejects_with_content": _rate(int((~blank).sum()), int(plain.sum())),
    }


BLANK_STD = 10.0  # luminance standard deviation (0-255) below which an image shows nothing


def _is_blank(path: Path) -> bool:
    return float(np.asarray(Image.open(path).convert("L"), dtype=np.float32).std()) < BLANK_STD


def validate_curation(run: Path, pool: Path) -> dict[str, dict]:
    """Score an ``emu filter`` run over a world pool (image folder) against its metadata.

    Each filter is scored on the samples that reached it: recall of the junk it exists for,
    and false rejects among the samples without that junk.
    """
    manifest = pd.read_parquet(Path(run) / "manifest.parquet")
    order = list(json.loads((Path(run) / "report" / "summary.json").read_text())["funnel"])[1:]
    truth = {record["file_name"]: record for record in pool_records(pool)}
    rows = manifest[manifest["key"].isin(truth)].copy()
    junk = rows["key"].map(lambda k: set(truth[k]["junk"]))
    results: dict[str, dict] = {}

    def reached(name: str) -> pd.Series:
        # A sample reached a filter unless an earlier one rejected it.
        earlier = order[: order.index(name)]
        return ~rows["reason"].isin(earlier)

    for name in ("ocr", "clip_score", "size"):
        if name not in order:
            continue
        here = reached(name)
        flagged = junk[here].map(lambda j, name=name: bool(JUNK_FOR_FILTER[name] & j))
        rejected = rows.loc[here, "reason"] == name
        results[name] = {
            "recall": _rate(int((rejected & flagged).sum()), int(flagged.sum())),
            "false_rejects": _rate(int((rejected & ~flagged).sum()), int((~flagged).sum())),
        }
    if "duplicates" in order:
        results["duplicates"] = _duplicate_rates(rows, truth, reached("duplicates"), Path(pool))
    if "aesthetic" in rows:
        scored = rows["aesthetic"].notna()
        appeal = rows.loc[scored, "key"].map(lambda k: truth[k]["appeal"]).to_numpy()
        clean = junk[scored].map(len).eq(0).to_numpy()
        predicted = rows.loc[scored, "aesthetic"].to_numpy(dtype=float)
        results["aesthetic"] = {
            "spearman": round(spearman(predicted, appeal), 4),
            "spearman_junk_free": round(spearman(predicted[clean], appeal[clean]), 4),
            "of": int(scored.sum()),
        }
    kept = rows["status"] == "kept"
    results["kept"] = {
        "count": int(kept.sum()),
        "junk_share": round(float(junk[kept].map(bool).mean()), 4) if kept.any() else None,
        "mean_appeal": round(
            float(rows.loc[kept, "key"].map(lambda k: truth[k]["appeal"]).mean()), 4
        )
        if kept.any()
        else None,
        "pool_mean_appeal": round(float(np.mean([t["appeal"] for t in truth.values()])), 4),
    }
    return results


# Junk that filters before the CLIP score remove; the ceiling is measured on what is left.
_REMOVED_BEFORE_CLIP = set().union(
    *(junk for name, junk in JUNK_FOR_FILTER.items() if name != "clip_score")
)


# Scores each (image, caption) pair; higher means the caption fits its image better.
CaptionScorer = Callable[[list[Image.Image], list[str]], np.ndarray]


def caption_check(
    pool: Path,
    score: CaptionScorer,
    false_reject_rate: float = 0.1,
    samples: slice = slice(None),
) -> dict:
    """How well ``score`` catches the pool's wrong captions: reject the lowest-scoring captions
    at ``false_reject_rate`` among correct ones, on the pool's ``samples`` that the filters
    before the CLIP score keep, and report the recall of wrong captions per kind of swap."""
    records = [r for r in pool_records(pool)[samples] if not set(r["junk"]) & _REMOVED_BEFORE_CLIP]
    images = [Image.open(Path(pool) / r["file_name"]).convert("RGB") for r in records]
    scores = score(images, [r["text"] for r in records])
    wrong = np.array(["wrong_caption" in r["junk"] for r in records])
    threshold = np.quantile(scores[~wrong], false_reject_rate)
    caught = scores < threshold
    swapped = {
        kind: np.array([r["caption_attributes"][kind] != r[kind] for r in records]) & wrong
        for kind in ("subject", "color")
    }
    return {
        "samples": len(records),
        "recall": _rate(int((caught & wrong).sum()), int(wrong.sum())),
        "false_rejects": _rate(int((caught & ~wrong).sum()), int((~wrong).sum())),
        **{
            f"{kind}_swap_recall": _rate(int((caught & mask).sum()), int(mask.sum()))
            for kind, mask in swapped.items()
        },
    }


def caption_check_ceiling(pool: Path, false_reject_rate: float = 0.1) -> dict:
    """:func:`caption_check` with the world's own supervised judge in the CLIP filter's place,
    scoring each caption by the judge's log-probability of what it names. The judge was trained
    on the world's truth, so this is a ceiling for a CLIP trained on the pool's noisy pairs: a
    swap the judge cannot see (a blurred or tiny subject) no caption check can catch."""
    return caption_check(pool, WorldJudges.load().caption_log_likelihood, false_reject_rate)


def subject_zero_shot(pool: Path, score: CaptionScorer, samples: slice = slice(None)) -> dict:
    """How often ``score`` names the subject: for each clean, correctly captioned image among
    the pool's ``samples``, its caption written once per subject (same color, background and
    wording), and the subject of the best-scoring one compared with the truth. Whether a caption
    check can catch subject swaps at all."""
    records = [r for r in pool_records(pool)[samples] if not r["junk"]]
    images = [Image.open(Path(pool) / r["file_name"]).convert("RGB") for r in records]
    scores = np.stack(
        [
            score(images, [caption(s, r["color"], r["background"], r["template"]) for r in records])
            for s in SUBJECTS
        ]
    )
    named = np.array([SUBJECTS[i] for i in scores.argmax(axis=0)])
    truth = np.array([r["subject"] for r in records])
    return {
        "images": len(records),
        "accuracy": round(float((named == truth).mean()), 4),
        "chance": round(1 / len(SUBJECTS), 4),
    }


def validate_generator(
    model: str | Path,
    *,
    subjects: tuple[str, ...] | None = None,
    per_subject: int = 16,
    steps: int = 25,
    guidance: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """How recognisable a model's images are: the faithfulness judge's accuracy per attribute
    on images generated for concept captions (by default the held-in subjects, those the curated
    set keeps), and their mean judged appeal."""
    import torch

    from emu_cli.checkpoint.folder import load_checkpoint, locate_checkpoint

    subjects = subjects or HELD_IN_SUBJECTS
    prompts = concept_prompts(subjects, per_subject, seed)
    located = locate_checkpoint(model)
    backend, loaded, _ = load_checkpoint(located.path)
    loaded.to(device)
    guidance = backend.guidance(guidance)
    images = backend.sample(
        loaded,
        prompts,
        steps=steps,
        guidance=guidance,
        seeds=[seed + i for i in range(len(prompts))],
        device=torch.device(device),
    )
    return {
        "model": located.name,
        "subjects": list(subjects),
        "steps": steps,
        "guidance": guidance,
        "image_size": images[0].width,
        **_recognisability(images, prompts),
    }


def validate_pool_images(pool: Path, size: int, subjects: tuple[str, ...] | None = None) -> dict:
    """The same figures for a pool's own images, brought to ``size`` and captioned with what
    they truly show: what a generator that drew exactly its training data would score."""
    subjects = subjects or HELD_IN_SUBJECTS
    records = [r for r in pool_records(pool) if r["subject"] in subjects]
    images = [
        Image.open(Path(pool) / r["file_name"]).convert("RGB").resize((size, size), Image.BICUBIC)
        for r in records
    ]
    prompts = [caption(r["subject"], r["color"], r["background"]) for r in records]
    return {
        "pool": str(pool),
        "subjects": list(subjects),
        "size": size,
        **_recognisability(images, prompts),
    }


def _recognisability(images: list[Image.Image], prompts: list[str]) -> dict:
    judges = WorldJudges.load()
    judgement = judges.judge(images)
    correct = judges.faithfulness(images, prompts, judgement)
    return {
        "images": len(images),
        **{f"{name}_accuracy": round(float(v.mean()), 4) for name, v in correct.items()},
        "mean_appeal": round(float(judgement.appeal.mean()), 4),
        "chance": {
            "subject": round(1 / len(SUBJECTS), 4),
            "color": round(1 / len(COLORS), 4),
            "background": round(1 / len(BACKGROUNDS), 4),
        },
    }
