"""Encoded training inputs computed once: quality-tuning reads a few thousand images for
thousands of steps, so re-running the autoencoder or tokenizer every step would be waste.

A backend's ``encode`` is pure and row-wise (row ``i`` of every output depends only on image
``i`` and caption ``i``), so one row can stand for its (image, caption) pair wherever it
appears. Rows are keyed by the image's bytes and the caption: a flipped image or a dropped
caption is another key, and every variant the data loader can produce is encoded up front.
Outputs a backend names in :attr:`~emu_cli.plugin.backend.Backend.caption_encodings` depend on
the caption alone and the rest on the image alone; they are then kept apart, so that an image
goes through the autoencoder once whatever captions it is trained with. For a backend that
reads framings, an image's row is keyed by its framing too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from tqdm.auto import tqdm

from emu_cli.data.framing import Framing
from emu_cli.plugin.backend import Backend, Model, encode_batch


def row_key(image: torch.Tensor, caption: str) -> str:
    digest = hashlib.blake2b(image.detach().cpu().contiguous().numpy().tobytes(), digest_size=16)
    digest.update(caption.encode("utf-8"))
    return digest.hexdigest()


class EncodingCache:
    """:func:`~emu_cli.plugin.backend.encode_batch` for one backend, answered from rows
    encoded once. ``encoder_calls`` counts the backend's own calls. A row missed during
    training is encoded inside ``whole()``: the model made whole where components were set
    aside (:class:`~emu_cli.training.set_aside.SetAside`)."""

    def __init__(
        self,
        backend: Backend,
        batch_size: int = 64,
        whole: Callable[[], AbstractContextManager] = nullcontext,
    ):
        self.backend, self.batch_size, self.whole = backend, batch_size, whole
        self.captioned = frozenset(backend.caption_encodings)
        self.rows: dict[str, dict[str, torch.Tensor]] = {}
        self.encoder_calls = 0

    def __len__(self) -> int:
        return len(self.rows)

    def _keys(self, image: torch.Tensor, caption: str, framing: Framing) -> tuple[str, ...]:
        """Where a pair's row is kept: one key for both, or the image's and the caption's."""
        framed = f"{framing}:" if self.backend.reads_framing else ""
        if not self.captioned:
            return (framed + row_key(image, caption),)
        return (f"image:{framed}" + row_key(image, ""), "caption:" + caption)

    def _encode_rows(
        self,
        model: Model,
        stage: str,
        images: torch.Tensor,
        captions: list[str],
        framings: list[Framing],
    ) -> None:
        self.encoder_calls += 1
        with torch.no_grad():
            encoded = encode_batch(self.backend, model, stage, images, captions, framings)
        for i, caption in enumerate(captions):
            row = {}
            for name, value in encoded.items():
                if not (isinstance(value, torch.Tensor) and value.shape[:1] == (len(captions),)):
                    raise ValueError(
                        f"backend '{self.backend.name}' encoded '{name}' without one row per "
                        "image, so its encodings cannot be cached; see Backend.encode"
                    )
                row[name] = value[i].detach().cpu()
            keys = self._keys(images[i], caption, framings[i])
            if len(keys) == 1:
                self.rows[keys[0]] = row
            else:
                self.rows[keys[0]] = {k: v for k, v in row.items() if k not in self.captioned}
                self.rows[keys[1]] = {k: v for k, v in row.items() if k in self.captioned}

    def warm(
        self,
        model: Model,
        stage: str,
        variants: Iterator[tuple[torch.Tensor, str, Framing]],
        total: int,
    ) -> None:
        """Encode every (image, caption, framing) variant before training starts, in batches
        of one image size (aspect buckets give several); a variant whose rows are all known
        already costs nothing."""
        waiting: dict[tuple[int, ...], tuple[list[torch.Tensor], list[str], list[Framing]]] = {}
        queued: set[str] = set()
        for image, caption, framing in tqdm(
            variants, total=total, desc="encoding once", leave=False
        ):
            keys = self._keys(image, caption, framing)
            if all(key in self.rows or key in queued for key in keys):
                continue
            queued.update(keys)
            images, captions, framings = waiting.setdefault(tuple(image.shape), ([], [], []))
            images.append(image)
            captions.append(caption)
            framings.append(framing)
            if len(images) == self.batch_size:
                self._encode_waiting(model, stage, images, captions, framings)
        for images, captions, framings in waiting.values():
            if images:
                self._encode_waiting(model, stage, images, captions, framings)

    def _encode_waiting(
        self,
        model: Model,
        stage: str,
        images: list[torch.Tensor],
        captions: list[str],
        framings: list[Framing],
    ) -> None:
        """Encode a waiting batch, then empty it."""
        stacked = torch.stack(images).to(model.device)
        self._encode_rows(model, stage, stacked, list(captions), list(framings))
        for items in (images, captions, framings):
            items.clear()

    def encode(
        self,
        model: Model,
        stage: str,
        images: torch.Tensor,
        captions: list[str],
        framings: list[Framing],
    ) -> dict[str, Any]:
        keys = [self._keys(*variant) for variant in zip(images, captions, framings, strict=True)]
        missing = [i for i, row in enumerate(keys) if any(key not in self.rows for key in row)]
        if missing:  # a variant the warm-up did not foresee: encode it now, once
            with self.whole():
                self._encode_rows(model, stage, images[missing], [captions[i] for i in missing],
                                  [framings[i] for i in missing])  # fmt: skip
        rows = [{name: value for key in row for name, value in self.rows[key].items()}
                for row in keys]  # fmt: skip
        return {
            name: torch.stack([row[name] for row in rows]).to(images.device) for name in rows[0]
        }
