"""Aesthetic score: a LAION-style head on CLIP image embeddings (emu_cli.curate.aesthetic)."""

from __future__ import annotations

from typing import Any

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources


class AestheticFilter(Filter):
    name = "aesthetic"
    description = "predicted 1-10 rating from CLIP image embeddings (needs weights=FILE)"
    column = "aesthetic"
    options = {"weights": None}
    default_threshold = {"keep_fraction": 0.5}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if not self.settings["weights"]:
            raise ValueError(
                "filter 'aesthetic' needs weights: a head from `emu filter train-aesthetic` "
                "or a LAION-style head for the same CLIP model"
            )

    def setup(self, resources: Resources) -> None:
        from emu_cli.curate.aesthetic import AestheticHead

        self.head = AestheticHead.load(self.settings["weights"])
        self.head.check_reads(resources.clip(), self.settings["weights"])

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        predicted = self.head.predict(resources.clip().image_embeddings(batch))
        return {"aesthetic": [round(float(v), 4) for v in predicted]}
