"""Aesthetic score: a LAION-style head on CLIP image embeddings (emu_cli.curate.aesthetic)."""

from __future__ import annotations

from typing import Any

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources

SAME_MODEL = 0.999  # fingerprint cosine: float rounding on another machine, not another model


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
        clip, record = resources.clip(), self.head.record
        # The fingerprint knows the model by its embeddings, so another path to the same
        # folder, or its Hub copy, is the same model; a head whose record has none (written by
        # hand for a LAION head) is checked by name.
        if "clip_fingerprint" in record:
            agreement = clip.agreement(record["clip_fingerprint"])
            same, why = agreement >= SAME_MODEL, f" (fingerprints agree to {agreement:.3f})"
        else:
            same, why = record.get("clip_model") in (None, clip.name), ""
        if not same:
            raise ValueError(
                f"aesthetic weights '{self.settings['weights']}' were trained on CLIP model "
                f"'{record['clip_model']}', not on '{clip.name}'{why}"
            )

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        predicted = self.head.predict(resources.clip().image_embeddings(batch))
        return {"aesthetic": [round(float(v), 4) for v in predicted]}
