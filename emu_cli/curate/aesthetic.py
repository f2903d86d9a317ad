"""A LAION-style aesthetic predictor: a small MLP on CLIP image embeddings, trained on ratings.

LAION trained theirs on AVA's photo ratings; offline, the ratings come from the world's
simulated raters (``emu data rate``). Weights are a safetensors file with a JSON record beside
it that says which CLIP model the head reads, so a head is never applied to the wrong space.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from emu_cli.curate.clip import ClipEncoder
from emu_cli.hub import HUB

HIDDEN = (256, 64)


def build_head(embed_dim: int):
    import torch.nn as nn

    return nn.Sequential(
        nn.Linear(embed_dim, HIDDEN[0]),
        nn.GELU(),
        nn.Dropout(0.2),
        nn.Linear(HIDDEN[0], HIDDEN[1]),
        nn.GELU(),
        nn.Linear(HIDDEN[1], 1),
    )


SAME_MODEL = 0.999  # fingerprint cosine: float rounding on another machine, not another model
HUB_HEAD = "aesthetic.safetensors"  # its name in a CLIP repo that `emu push --aesthetic` made


def record_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def _from_hub(spec: str) -> Path:
    """``hf-hub:OWNER/NAME/FILE.safetensors``: the head and its record, downloaded (or from
    the download cache), with huggingface_hub's own token, endpoint and offline settings."""
    from huggingface_hub import hf_hub_download

    from emu_cli.hub import HubError, explain

    owner, _, rest = spec.removeprefix(HUB).partition("/")
    name, _, filename = rest.partition("/")
    if not (owner and name and filename):
        raise ValueError(
            f"aesthetic weights '{spec}' must be {HUB}OWNER/NAME/FILE.safetensors, e.g. "
            f"{HUB}me/pool-clip/{HUB_HEAD}"
        )
    try:
        # Both land in the same snapshot folder, so the record is beside the weights.
        hf_hub_download(f"{owner}/{name}", str(record_path(filename)))
        return Path(hf_hub_download(f"{owner}/{name}", filename))
    except Exception as error:  # huggingface_hub raises many types: offline, 404, network
        raise HubError(explain(error, f"aesthetic weights '{spec}'")) from error


class AestheticHead:
    """Predicts a 1-10 rating from normalised CLIP image embeddings."""

    def __init__(self, net, record: dict[str, Any]):
        self.net = net.eval()
        self.record = record

    @classmethod
    def load(cls, weights: str | Path) -> AestheticHead:
        from safetensors.torch import load_file

        weights = _from_hub(str(weights)) if str(weights).startswith(HUB) else Path(weights)
        if not weights.is_file():
            raise ValueError(f"aesthetic weights '{weights}' do not exist")
        if not record_path(weights).is_file():
            raise ValueError(
                f"aesthetic weights '{weights}' have no record '{record_path(weights).name}' "
                "beside them (it says which CLIP model the head reads)"
            )
        record = json.loads(record_path(weights).read_text())
        net = build_head(int(record["embed_dim"]))
        try:
            net.load_state_dict(load_file(weights))
        except Exception as error:
            raise ValueError(
                f"aesthetic weights '{weights}' do not fit the head: {error}"
            ) from error
        return cls(net, record)

    def check_reads(self, clip: ClipEncoder, weights: str | Path) -> None:
        """Refuse a CLIP model other than the one the head was trained on. The fingerprint
        knows the model by its embeddings, so another path to the same folder, or its Hub
        copy, is the same model; a record without one (written by hand for a LAION head) is
        checked by the model's name."""
        record = self.record
        if "clip_fingerprint" in record:
            agreement = clip.agreement(record["clip_fingerprint"])
            same, why = agreement >= SAME_MODEL, f" (fingerprints agree to {agreement:.3f})"
        else:
            same, why = record.get("clip_model") in (None, clip.name), ""
        if not same:
            raise ValueError(
                f"aesthetic weights '{weights}' were trained on CLIP model "
                f"'{record['clip_model']}', not on '{clip.name}'{why}"
            )

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.net(torch.from_numpy(np.ascontiguousarray(embeddings))).squeeze(1).numpy()


RATING_SCALE = (1.0, 10.0)  # AVA's and LAION's


def read_ratings(path: Path) -> tuple[dict[str, float], int]:
    """JSON lines ``{"key": ..., "rating": 1-10}``, one per vote or one per image: each image's
    mean rating (AVA's scores are means of votes), and how many lines were read. Errors name the
    file and the line."""
    votes: dict[str, list[float]] = {}
    low, high = RATING_SCALE
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key, rating = str(record["key"]), float(record["rating"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f'ratings file \'{path}\' line {number}: expected {{"key": ..., "rating": '
                f"number}} ({error})"
            ) from error
        if not low <= rating <= high:  # also refuses NaN
            raise ValueError(
                f"ratings file '{path}' line {number}: rating {rating} is outside {low:g}-{high:g}"
            )
        votes.setdefault(key, []).append(rating)
    if len(votes) < 10:
        raise ValueError(f"ratings file '{path}' rates {len(votes)} images; need at least 10")
    return {key: float(np.mean(v)) for key, v in votes.items()}, sum(map(len, votes.values()))


def train_head(
    embeddings: np.ndarray,
    ratings: np.ndarray,
    *,
    epochs: int = 300,
    seed: int = 0,
    validation_fraction: float = 0.15,
) -> tuple[Any, dict[str, float]]:
    """Fit the MLP with MSE; keep the epoch with the best validation loss."""
    import torch

    from emu_cli.stats import spearman

    generator = np.random.default_rng(seed)
    order = generator.permutation(len(ratings))
    # at least 3 held out: a rank correlation of fewer says nothing (of 1 it is undefined)
    cut = max(3, int(len(ratings) * validation_fraction))
    valid, train = order[:cut], order[cut:]
    torch.manual_seed(seed)
    net = build_head(embeddings.shape[1])
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-3)
    x = torch.from_numpy(embeddings.astype(np.float32))
    y = torch.from_numpy(ratings.astype(np.float32))
    best = (float("inf"), None, 0)
    for epoch in range(epochs):
        net.train()
        shuffled = train[generator.permutation(len(train))]
        for start in range(0, len(train), 128):
            rows = torch.from_numpy(shuffled[start : start + 128])
            loss = torch.nn.functional.mse_loss(net(x[rows]).squeeze(1), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            valid_loss = float(torch.nn.functional.mse_loss(net(x[valid]).squeeze(1), y[valid]))
        if valid_loss < best[0]:
            best = (valid_loss, {k: v.clone() for k, v in net.state_dict().items()}, epoch)
    net.load_state_dict(best[1])
    net.eval()
    with torch.no_grad():
        predicted = net(x[valid]).squeeze(1).numpy()
    metrics = {
        "validation_mse": round(best[0], 4),
        "validation_spearman": round(spearman(predicted, ratings[valid]), 4),
        "validation_samples": len(valid),
        "best_epoch": best[2],
    }
    return net, metrics


def train_aesthetic(
    data: Path,
    ratings_file: Path,
    clip: ClipEncoder,
    out: Path,
    *,
    seed: int = 0,
    batch_size: int = 128,
) -> dict[str, Any]:
    """Embed the rated images of a pool with ``clip``, train the head, write weights + record."""
    from safetensors.torch import save_file

    from emu_cli.data import index_dataset
    from emu_cli.data.dataset import read_image

    started = time.perf_counter()
    ratings, votes = read_ratings(ratings_file)
    index = index_dataset(data)
    rated = [s for s in index.samples if s.key in ratings]
    if len(rated) < 10:
        raise ValueError(
            f"only {len(rated)} of the {len(ratings)} rated keys in '{ratings_file}' are samples "
            f"of '{data}'; the keys must be the pool's sample keys"
        )
    strays = sorted(set(ratings) - {s.key for s in rated})
    embeddings = np.concatenate(
        [
            clip.encode_images([read_image(s) for s in rated[start : start + batch_size]])
            for start in range(0, len(rated), batch_size)
        ]
    )
    targets = np.array([ratings[s.key] for s in rated])
    net, metrics = train_head(embeddings, targets, seed=seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out)
    record = {
        "embed_dim": int(embeddings.shape[1]),
        "clip_model": clip.name,
        "clip_fingerprint": clip.fingerprint(),
        "ratings": str(ratings_file),
        "rated_samples": len(rated),
        "ratings_read": votes,
        # rated keys the pool does not hold: left out, and said, not silently dropped
        "keys_not_in_pool": len(strays),
        "keys_not_in_pool_first": strays[:5],
        "seed": seed,
        **metrics,
        "seconds": round(time.perf_counter() - started, 1),
    }
    record_path(out).write_text(json.dumps(record, indent=2))
    return record
