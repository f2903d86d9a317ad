"""Components that no training step runs, out of memory while the steps run.

With its encodings cached, quality-tuning never runs a frozen text encoder between steps, and
the encoders an open model brings can be larger than what is trained (T5-XXL: 4.7B
parameters beside Flux's or SD3's transformer). They are set aside on torch's meta device,
which holds no data, and read again from the folder the model was loaded from whenever the
model must be whole: to sample (validation, previews) and to save.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from emu_cli.plugin.backend import Model


class SetAside:
    """``names`` of ``model``'s components, loadable from ``folder / name`` with their own
    class's ``from_pretrained`` (diffusers' folder layout) since training does not change
    them."""

    def __init__(self, model: Model, names: Sequence[str], folder: Path):
        self.model, self.names, self.folder = model, tuple(names), Path(folder)
        self.places: dict[str, tuple[torch.device, torch.dtype]] = {}

    @property
    def released(self) -> bool:
        return bool(self.places)

    def release(self) -> None:
        """Move each component's weights to the meta device, freeing their memory."""
        for name in self.names:
            module = self.model[name]
            weight = next(module.parameters())
            self.places[name] = (weight.device, weight.dtype)
            module.to("meta")

    def restore(self) -> None:
        """Read each released component again, where and as it was."""
        for name, (device, dtype) in self.places.items():
            module = type(self.model[name]).from_pretrained(self.folder / name)
            self.model.components[name] = module.to(device, dtype).requires_grad_(False)
        self.places = {}

    @contextmanager
    def whole(self) -> Iterator[None]:
        """The model with every component in place for the block, set aside again after."""
        if not self.released:
            yield
            return
        self.restore()
        try:
            yield
        finally:
            self.release()
