"""Mapping a judge's raw scores to [0, 1], the same way for every judge.

Raw scores live on each model's own scale (an aesthetic head's 1-10 rating, PickScore's scaled
logit around 20, a CLIP cosine around 0.3). A judge declares, per measure, the raw score that
maps to 0.5 (``center``) and how far a raw score must move to go from 0.5 to about 0.73
(``spread``); the mapping is the logistic ``1 / (1 + exp(-(raw - center) / spread))``. It is
monotone, so a judge's ranking of images (all early stopping and calibration use) does not
change; the constants make one judge's 0.6 mean about what another's does. Each built-in
judge's constants and where they come from are in docs/judges.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scale:
    center: float
    spread: float

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(np.asarray(raw, dtype=float) - self.center) / self.spread))


def mapped(raw: dict[str, np.ndarray], scales: dict[str, Scale]) -> dict[str, np.ndarray]:
    """Each measure of ``raw`` in [0, 1] by its scale, with the raw score as ``raw_NAME``."""
    scores = {name: scales[name](values) for name, values in raw.items()}
    return {**scores, **{f"raw_{name}": np.asarray(v, dtype=float) for name, v in raw.items()}}
