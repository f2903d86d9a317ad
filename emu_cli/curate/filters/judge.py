"""Curating by a judge: the same model that stops quality-tuning early (a ``--judge`` spec,
e.g. ``clip-aesthetic@models`` or ``hpsv2``) scores each image for its caption."""

from __future__ import annotations

from typing import Any

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources
from emu_cli.plugin.judge import MEASURES


class JudgeFilter(Filter):
    name = "judge"
    reads_captions = True
    description = "a judge's score of each image for its caption (spec=JUDGE, measure=appeal)"
    column = "judge"
    options = {"spec": None, "measure": "appeal"}
    default_threshold = {"keep_fraction": 0.5}

    def __init__(self, **options: Any):
        super().__init__(**options)
        if not self.settings["spec"]:
            raise ValueError(
                "filter 'judge' needs spec: a judge as --judge takes it, e.g. --set "
                "judge.spec=clip-aesthetic@MODELS (docs/judges.md)"
            )
        if self.settings["measure"] not in MEASURES:
            raise ValueError(
                f"filter 'judge': measure must be one of {', '.join(MEASURES)}, got "
                f"{self.settings['measure']!r}"
            )

    def setup(self, resources: Resources) -> None:
        self.judge = resources.judge(self.settings["spec"])
        if self.settings["measure"] not in self.judge.measures:
            raise ValueError(
                f"filter 'judge': judge '{self.settings['spec']}' does not measure "
                f"{self.settings['measure']}"
            )

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        measure = self.settings["measure"]
        scores = self.judge.score(
            [item.image for item in batch.items], [item.caption for item in batch.items]
        )
        # unrounded: a logistic far from its center squeezes scores together, and a rank-based
        # threshold must still tell them apart
        columns = {"judge": [float(v) for v in scores[measure]]}
        if f"raw_{measure}" in scores:  # the model's own scale, for people reading the manifest
            columns["judge_raw"] = [float(v) for v in scores[f"raw_{measure}"]]
        return columns
