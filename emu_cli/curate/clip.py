"""CLIP for curation: open_clip models by name, Hub id or local folder, and a small one trained
on the pool itself for offline use (``emu filter train-clip``).

The trained model is saved in open_clip's own Hub layout (``open_clip_config.json`` and
``open_clip_model.safetensors``), so open_clip loads it with ``local-dir:FOLDER``, and the same
folder pushed to the Hub loads with ``hf-hub:OWNER/NAME``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emu_cli.curate.batch import Batch

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
RECORD_FILE = "emu_clip.json"
# Small enough to train on two CPU cores in minutes, large enough to tell the world's
# subjects and colors apart: 48 px images in 8 px patches, 20 caption tokens.
SMALL_CLIP = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 48, "layers": 4, "width": 128, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}

# A model's embedding of this caption tells it apart from any other model, wherever it was
# loaded from (a folder, another path to it, its Hub copy).
FINGERPRINT_CAPTION = "a photo of a thing on a background"


def model_identifier(spec: str) -> str:
    """A folder becomes open_clip's ``local-dir:`` identifier; anything else is passed on."""
    return f"local-dir:{Path(spec).resolve()}" if Path(spec).is_dir() else spec


def refuse_pickled_clip(spec: str, pretrained: str | None) -> None:
    """Refuse the pickle open_clip would read: a weights file named by ``pretrained``, or a
    folder's ``open_clip_pytorch_model.bin`` (read when it has no safetensors). Other files a
    folder holds (an aesthetic head beside the model) are not open_clip's to read."""
    from emu_cli.errors import EmuError
    from emu_cli.files import refuse_pickles

    if pretrained and Path(pretrained).is_file():
        refuse_pickles(Path(pretrained))
    folder = Path(spec)
    if folder.is_dir() and not (folder / WEIGHTS_FILE).is_file():
        pickled = folder / "open_clip_pytorch_model.bin"
        if pickled.exists():
            raise EmuError(
                f"'{spec}' holds pickled weights ({pickled.name}); emu loads safetensors only, "
                "since pickle files can run code when loaded"
            )


@dataclass
class ClipEncoder:
    """Normalised image and text embeddings from an open_clip model, in batches."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    name: str
    batch_size: int = 64

    @classmethod
    def load(cls, spec: str, pretrained: str | None = None, device: str = "cpu") -> ClipEncoder:
        import open_clip

        refuse_pickled_clip(spec, pretrained)
        identifier = model_identifier(spec)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                identifier, pretrained=pretrained, device=device
            )
            tokenizer = open_clip.get_tokenizer(identifier)
        except Exception as error:  # open_clip raises RuntimeError, FileNotFoundError, ...
            hint = (
                " Without network, train one on your pool with `emu filter train-clip` and "
                "pass its folder."
                if not Path(spec).exists()
                else ""
            )
            raise ValueError(
                f"cannot load CLIP model '{spec}'"
                + (f" with pretrained '{pretrained}'" if pretrained else "")
                + f": {error}.{hint}"
            ) from error
        model.eval()
        return cls(model, preprocess, tokenizer, device, spec)

    def encode_images(self, images: list) -> np.ndarray:
        import torch

        pixels = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        with torch.inference_mode():
            features = self.model.encode_image(pixels, normalize=True)
        return features.float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        tokens = self.tokenizer(texts).to(self.device)
        with torch.inference_mode():
            features = self.model.encode_text(tokens, normalize=True)
        return features.float().cpu().numpy()

    def fingerprint(self) -> list[float]:
        """This model's embedding of :data:`FINGERPRINT_CAPTION`, for records of what was
        computed with it."""
        return [round(value, 6) for value in self.encode_texts([FINGERPRINT_CAPTION])[0].tolist()]

    def agreement(self, fingerprint: list[float]) -> float:
        """Cosine of a recorded fingerprint with this model's: 1 for the same model (to
        float rounding on another machine), far below for any other model."""
        own = np.asarray(self.fingerprint())
        if len(fingerprint) != len(own):
            return 0.0
        recorded = np.asarray(fingerprint)
        return float(recorded @ own / (np.linalg.norm(recorded) * np.linalg.norm(own)))

    def similarity(self, images: list, texts: list[str]) -> np.ndarray:
        """Cosine of each image with its own text, in batches: the CLIP score of each pair."""
        scores = []
        for start in range(0, len(images), self.batch_size):
            part = slice(start, start + self.batch_size)
            scores.append(
                np.einsum(
                    "nd,nd->n", self.encode_images(images[part]), self.encode_texts(texts[part])
                )
            )
        return np.concatenate(scores) if scores else np.zeros(0)

    def image_embeddings(self, batch: Batch) -> np.ndarray:
        """The batch's image embeddings, computed once per item however many filters ask."""
        return self._cached(
            batch, "clip_image", lambda items: [i.image for i in items], self.encode_images
        )

    def caption_embeddings(self, batch: Batch) -> np.ndarray:
        return self._cached(
            batch, "clip_text", lambda items: [i.caption for i in items], self.encode_texts
        )

    def _cached(self, batch: Batch, name: str, inputs, encode) -> np.ndarray:
        store = batch.cache.setdefault(name, {})
        missing = [item for item in batch.items if item.key not in store]
        for start in range(0, len(missing), self.batch_size):
            part = missing[start : start + self.batch_size]
            store.update(zip([i.key for i in part], encode(inputs(part)), strict=True))
        return np.stack([store[item.key] for item in batch.items])


class WordSwap:
    """Hard negative captions, as NegCLIP: each caption with one word replaced by another word
    seen between the same two neighbours elsewhere in the pool ("a red [star] on" becomes
    "a red [heart] on"), so the negative differs in exactly what an image must show. Without
    them a small CLIP learns captions as bags of words and matches on the easiest words (in the
    world: background, then color), never the subject."""

    def __init__(self, captions: list[str], seed: int):
        self.fillers: dict[tuple[str, str], list[str]] = {}
        seen: dict[tuple[str, str], set[str]] = {}
        for text in captions:
            words = ["<s>", *text.split(), "</s>"]
            for left, middle, right in zip(words, words[1:], words[2:], strict=False):
                seen.setdefault((left, right), set()).add(middle)
        self.fillers = {context: sorted(words) for context, words in seen.items() if len(words) > 1}
        self.rng = np.random.default_rng([seed, 7])

    def __call__(self, captions: list[str]) -> list[str]:
        swapped = []
        for text in captions:
            words = ["<s>", *text.split(), "</s>"]
            places = [
                i for i in range(1, len(words) - 1) if (words[i - 1], words[i + 1]) in self.fillers
            ]
            if places:
                i = places[int(self.rng.integers(len(places)))]
                options = [w for w in self.fillers[(words[i - 1], words[i + 1])] if w != words[i]]
                words[i] = options[int(self.rng.integers(len(options)))]
            swapped.append(" ".join(words[1:-1]))
        return swapped


def contrastive_loss(model, pixels, tokens):
    """CLIP's symmetric loss; texts past the batch size are extra negatives for the images."""
    import torch
    import torch.nn.functional as F

    images = model.encode_image(pixels, normalize=True)
    texts = model.encode_text(tokens, normalize=True)
    logits = model.logit_scale.exp() * images @ texts.T
    labels = torch.arange(len(images))
    return (
        F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, : len(images)].T, labels)
    ) / 2


def save_open_clip(model: Any, config: dict[str, Any], out: Path) -> None:
    """``model`` (an ``open_clip.CLIP`` built from ``config``) in open_clip's Hub layout, which
    ``local-dir:OUT`` and, pushed, ``hf-hub:OWNER/NAME`` load."""
    import open_clip
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    preprocess = {
        "image_size": config["vision_cfg"]["image_size"],
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    text = json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}, indent=2)
    (out / CONFIG_FILE).write_text(text)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)


def train_clip(
    data: Path,
    out: Path,
    *,
    steps: int = 1000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train :data:`SMALL_CLIP` contrastively on a pool's image-caption pairs; save it in
    open_clip's layout in ``out`` with a record of how it was made."""
    import open_clip
    import torch
    from tqdm.auto import tqdm

    from emu_cli.data import index_dataset
    from emu_cli.data.dataset import StepBatches, TrainingDataset, collate

    if steps < 1 or batch_size < 2:
        raise ValueError(f"need steps >= 1 and batch size >= 2, got {steps} and {batch_size}")
    started = time.perf_counter()
    torch.manual_seed(seed)
    index = index_dataset(data)
    image_size = SMALL_CLIP["vision_cfg"]["image_size"]
    dataset = TrainingDataset(index, image_size, seed=seed, random_flip=True)
    sampler = StepBatches(len(index), batch_size, 1, 0, seed, 0, steps)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=1, persistent_workers=False
    )
    model = open_clip.CLIP(**SMALL_CLIP)
    tokenizer = open_clip.SimpleTokenizer(context_length=SMALL_CLIP["text_cfg"]["context_length"])
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.1)
    warmup = min(100, steps // 10 + 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )
    swap = WordSwap([sample.caption for sample in index.samples], seed)
    losses: list[float] = []
    bar = tqdm(loader, total=steps, desc="train clip", disable=not progress)
    for images, captions, _framings, _skipped in bar:
        pixels = ((images + 1) / 2 - mean) / std  # the reader gives [-1, 1]; CLIP wants these
        loss = contrastive_loss(model, pixels, tokenizer(captions + swap(captions)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    save_open_clip(model, SMALL_CLIP, out)
    record = {
        "data": str(data),
        "data_fingerprint": index.fingerprint(),
        "samples": len(index),
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        # Past a few dozen passes this small CLIP memorizes the pool's pairs, wrong captions
        # included, and the clip_score filter stops catching them (docs/curation.md).
        "passes": round(steps * batch_size / len(index), 1),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2))
    return record
