"""Encoded training inputs computed once: quality-tuning reads a few thousand images for
thousands of steps, so re-running the autoencoder or tokenizer every step would be waste.

A backend's ``encode`` is pure and row-wise (row ``i`` of every output depends only on image
``i`` and caption ``i``), so one row can stand for its (image, caption) pair wherever it
appears. Rows are keyed by the image's bytes and the caption: a flipped image or a dropped
caption is another key, and every variant the data loader can produce is encoded up front.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from emu_cli.plugin.backend import Backend, Model


def row_key(image: torch.Tensor, caption: str) -> str:
    digest = hashlib.blake2b(image.detach().cpu().contiguous().numpy().tobytes(), digest_size=16)
    digest.update(caption.encode("utf-8"))
    return digest.hexdigest()


class EncodingCache:
    """``encode(model, stage, images, captions)`` with the backend's signature, answered from
    rows encoded once. ``encoder_calls`` counts the backend's own calls."""

    def __init__(self, backend: Backend, batch_size: int = 64):
        self.backend, self.batch_size = backend, batch_size
        self.rows: dict[str, dict[str, torch.Tensor]] = {}
        self.encoder_calls = 0

    def __len__(self) -> int:
        return len(self.rows)

    def _encode_rows(
        self, model: Model, stage: str, images: torch.Tensor, captions: list[str]
    ) -> None:
        self.encoder_calls += 1
        with torch.no_grad():
            encoded = self.backend.encode(model, stage, images, captions)
        for i, caption in enumerate(captions):
            row = {}
            for name, value in encoded.items():
                if not (isinstance(value, torch.Tensor) and value.shape[:1] == (len(captions),)):
                    raise ValueError(
                        f"backend '{self.backend.name}' encoded '{name}' without one row per "
                        "image, so its encodings cannot be cached; see Backend.encode"
                    )
                row[name] = value[i].detach().cpu()
            self.rows[row_key(images[i], caption)] = row

    def warm(
        self, model: Model, stage: str, variants: Iterator[tuple[torch.Tensor, str]], total: int
    ) -> None:
        """Encode every (image, caption) variant before training starts, in batches of one
        image size (aspect buckets give several)."""
        device = model.device
        waiting: dict[tuple[int, ...], tuple[list[torch.Tensor], list[str]]] = {}
        for image, caption in tqdm(variants, total=total, desc="encoding once", leave=False):
            if row_key(image, caption) in self.rows:
                continue
            images, captions = waiting.setdefault(tuple(image.shape), ([], []))
            images.append(image)
            captions.append(caption)
            if len(images) == self.batch_size:
                self._encode_rows(model, stage, torch.stack(images).to(device), captions)
                images.clear()
                captions.clear()
        for images, captions in waiting.values():
            if images:
                self._encode_rows(model, stage, torch.stack(images).to(device), captions)

    def encode(
        self, model: Model, stage: str, images: torch.Tensor, captions: list[str]
    ) -> dict[str, Any]:
        keys = [row_key(image, caption) for image, caption in zip(images, captions, strict=True)]
        missing = [i for i, key in enumerate(keys) if key not in self.rows]
        if missing:  # a variant the warm-up did not foresee: encode it now, once
            self._encode_rows(model, stage, images[missing], [captions[i] for i in missing])
        names = self.rows[keys[0]].keys()
        return {
            name: torch.stack([self.rows[key][name] for key in keys]).to(images.device)
            for name in names
        }
