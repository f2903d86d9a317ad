"""BLIP image captioning through transformers (``BlipForConditionalGeneration`` with its
processor): by Hub name (default ``Salesforce/blip-image-captioning-base``, BSD-3-Clause) or
local folder, the same code path either way. A BLIP-large or a fine-tuned BLIP folder works
too: ``blip@FOLDER``."""

from __future__ import annotations

import dataclasses
from typing import Any

from emu_cli.plugin.captioner import Captioner

DEFAULT_SOURCE = "Salesforce/blip-image-captioning-base"
# Long enough for a sentence about a photo; BLIP's captions run 8-15 tokens.
MAX_NEW_TOKENS = 30


@dataclasses.dataclass
class BlipCaptioner(Captioner):
    name: str = "blip"
    description: str = (
        "BLIP image captioning (transformers), e.g. blip@Salesforce/blip-image-captioning-large"
    )
    source: str | None = None
    prompt: str | None = None  # BLIP's conditional captioning: a start such as "a photo of"
    _loaded: Any = dataclasses.field(default=None, repr=False, compare=False)

    def from_source(self, source: str) -> BlipCaptioner:
        return BlipCaptioner(source=source, prompt=self.prompt)

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import BlipForConditionalGeneration, BlipProcessor

            where = self.source or DEFAULT_SOURCE
            processor = BlipProcessor.from_pretrained(where)
            model = BlipForConditionalGeneration.from_pretrained(where, use_safetensors=True)
            self._loaded = (processor, model.eval())
        return self._loaded

    def caption(self, images: list) -> list[str]:
        import torch

        processor, model = self._model()
        rgb = [image.convert("RGB") for image in images]
        text = [self.prompt] * len(rgb) if self.prompt else None
        inputs = processor(images=rgb, text=text, return_tensors="pt")
        with torch.no_grad():
            tokens = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        return [t.strip() for t in processor.batch_decode(tokens, skip_special_tokens=True)]
