"""Image size and aspect ratio, as DataComp's basic filter: reject small or extreme images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources

if TYPE_CHECKING:
    import pandas as pd


class SizeFilter(Filter):
    name = "size"
    description = "minimum shorter side and maximum aspect ratio (DataComp's basic filter)"
    phase = "scan"
    options = {"min_side": 200, "max_aspect": 3.0}

    def __init__(self, **options: Any):
        super().__init__(**options)
        # an aspect ratio here is the longer side over the shorter: never below 1
        if self.settings["max_aspect"] < 1 or self.settings["min_side"] < 0:
            raise ValueError(
                f"filter 'size': max_aspect must be >= 1 and min_side >= 0, got "
                f"{self.settings['max_aspect']} and {self.settings['min_side']}"
            )

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        sizes = [item.image.size for item in batch.items]
        return {
            "width": [w for w, _ in sizes],
            "height": [h for _, h in sizes],
            "aspect": [round(max(w, h) / min(w, h), 4) for w, h in sizes],
        }

    def decide(self, table: pd.DataFrame) -> pd.Series:
        import pandas as pd

        side = np.minimum(table["width"], table["height"])
        reasons = []
        for short, aspect in zip(side, table["aspect"], strict=True):
            if short < self.settings["min_side"]:
                reasons.append(f"shorter side {short} px < {self.settings['min_side']}")
            elif aspect > self.settings["max_aspect"]:
                reasons.append(f"aspect ratio {aspect:.2f} > {self.settings['max_aspect']}")
            else:
                reasons.append(None)
        return pd.Series(reasons, index=table.index, dtype=object)
