"""Aesthetic score: a LAION-style head on CLIP image embeddings (emu_cli.curate.aesthetic)."""

from __future__ import annotations

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources


class AestheticFilter(Filter):
    name = "aesthetic"
    description = "predicted 1-10 rating from CLIP image embeddings (needs weights=FILE)"
    column = "aesthetic"
    options = {"weights": None}
    default_threshold = {"keep_fraction": 0.5}

    def setup(self, resources: Resources) -> None:
        from emu_cli.curate.aesthetic import AestheticHead

        if not self.settings["weights"]:
            raise ValueError(
                "filter 'aesthetic' needs weights: a head from `emu filter train-aesthetic` "
                "or a LAION-style head for the same CLIP model"
            )
        self.head = AestheticHead.load(self.settings["weights"])
        clip = resources.clip()
        if self.head.record.get("clip_model") not in (None, clip.name):
            raise ValueError(
                f"aesthetic weights '{self.settings['weights']}' were trained on CLIP model "
                f"'{self.head.record['clip_model']}', not '{clip.name}'"
            )

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        predicted = self.head.predict(resources.clip().image_embeddings(batch))
        return {"aesthetic": [round(float(v), 4) for v in predicted]}
