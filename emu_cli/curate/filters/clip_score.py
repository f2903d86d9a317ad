"""Image-text alignment: cosine similarity of CLIP's image and caption embeddings."""

from __future__ import annotations

import numpy as np

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources


class ClipScoreFilter(Filter):
    name = "clip_score"
    reads_captions = True
    description = "CLIP image-caption cosine similarity (poor alignment is rejected)"
    column = "clip_score"
    default_threshold = {"min": 0.2}

    def setup(self, resources: Resources) -> None:
        resources.clip()

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        clip = resources.clip()
        images, texts = clip.image_embeddings(batch), clip.caption_embeddings(batch)
        similarity = np.einsum("nd,nd->n", images, texts)
        return {"clip_score": [round(float(s), 5) for s in similarity]}
