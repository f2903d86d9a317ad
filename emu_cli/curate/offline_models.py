"""The models ``emu filter`` needs, made offline from the pool itself: a small CLIP trained on
its pairs, 1-10 ratings of a random subset (as AVA's) by a registered panel, and a LAION-style
aesthetic head trained on those ratings. Where a user has a pretrained CLIP and real ratings,
they pass those instead; this is the stand-in for everyone else, and for tests and the demo."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from emu_cli.config import changes

# What a folder's models were made with, so that a rerun keeps only parts it would remake.
RECORD = "train-models.json"


@dataclass
class OfflineModels:
    clip: Path
    ratings: Path
    aesthetic: Path


def write_ratings(ratings: dict[str, float], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"key": k, "rating": v}) + "\n" for k, v in ratings.items()))


def train_offline_models(
    pool: Path,
    out: Path,
    *,
    clip_steps: int = 1000,
    clip_batch_size: int = 128,
    rated: int = 2000,
    seed: int = 0,
    panel: str = "world",
) -> OfflineModels:
    """Train what is missing under ``out`` (``clip/``, ``ratings.jsonl``,
    ``aesthetic.safetensors``); what a previous run with the same settings and pool finished is
    kept, and a folder made with others is refused (its parts would be mixed with new ones)."""
    from emu_cli.curate.aesthetic import train_aesthetic
    from emu_cli.curate.clip import ClipEncoder, train_clip
    from emu_cli.data import index_dataset
    from emu_cli.plugin import registry

    if clip_steps < 1 or clip_batch_size < 2 or rated < 10:
        raise ValueError(
            "train-models needs --clip-steps >= 1, --clip-batch-size >= 2 (a contrastive batch) "
            f"and --num-rated >= 10 (the aesthetic head's minimum); got {clip_steps}, "
            f"{clip_batch_size} and {rated}"
        )
    out = Path(out)
    settings = {  # the pool's path is a note: its fingerprint decides
        "pool": str(pool),
        "pool_fingerprint": index_dataset(pool).fingerprint(),
        "clip_steps": clip_steps,
        "clip_batch_size": clip_batch_size,
        "rated": rated,
        "seed": seed,
    }
    record = out / RECORD
    if record.is_file():
        changed = changes(
            json.loads(record.read_text()), settings, [k for k in settings if k != "pool"]
        )
        if changed:
            raise ValueError(
                f"'{out}' holds models made with other settings or another pool "
                f"({'; '.join(changed)}); choose another --out, or remove it to remake them"
            )
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=2))
    models = OfflineModels(out / "clip", out / "ratings.jsonl", out / "aesthetic.safetensors")
    if not (models.clip / "open_clip_config.json").is_file():
        train_clip(pool, models.clip, steps=clip_steps, batch_size=clip_batch_size, seed=seed)
    if not models.ratings.is_file():
        write_ratings(registry.get_panel(panel).rate(pool, rated, seed=seed), models.ratings)
    if not models.aesthetic.is_file():
        clip = ClipEncoder.load(str(models.clip))
        train_aesthetic(pool, models.ratings, clip, models.aesthetic, seed=seed)
    return models
