"""Concept balancing: name each image's concept zero-shot with CLIP, and cap any concept's
share of what this filter keeps at ``max_share``, so the curated set stays general.

Within an over-represented concept the samples with the best ``rank_by`` score (the aesthetic
score when that filter ran, else the CLIP score) are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources

if TYPE_CHECKING:
    import pandas as pd

# The paper's examples of visual concepts; set `concepts:` for your own pool.
DEFAULT_CONCEPTS = ("portrait", "food", "animal", "landscape", "car", "building", "plant", "object")


def largest_cap(counts: np.ndarray, max_share: float) -> int:
    """The largest per-concept cap c such that no concept exceeds ``max_share`` of what is
    kept when each concept keeps at most c: c <= max_share * sum(min(count, c))."""
    low, high = 1, int(counts.max())
    while low < high:
        middle = (low + high + 1) // 2
        if middle <= max_share * np.minimum(counts, middle).sum():
            low = middle
        else:
            high = middle - 1
    return low


class ConceptBalanceFilter(Filter):
    name = "concepts"
    description = "zero-shot concept with CLIP; caps any concept's share (max_share)"
    phase = "score"
    options = {
        "concepts": list(DEFAULT_CONCEPTS),
        "template": "a photo of a {}",
        "max_share": 0.25,
        "rank_by": ["aesthetic", "clip_score"],
    }

    def __init__(self, **options: Any):
        super().__init__(**options)
        if len(self.settings["concepts"]) < 2:
            raise ValueError("filter 'concepts' needs at least two concepts")

    def setup(self, resources: Resources) -> None:
        self.prompts = resources.clip().encode_texts(
            [self.settings["template"].format(c) for c in self.settings["concepts"]]
        )

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        similarity = resources.clip().image_embeddings(batch) @ self.prompts.T
        best = similarity.argmax(axis=1)
        return {"concept": [self.settings["concepts"][i] for i in best]}

    def decide(self, table: pd.DataFrame) -> pd.Series:
        import pandas as pd

        counts = table["concept"].value_counts().to_numpy()
        cap = largest_cap(counts, float(self.settings["max_share"]))
        rank_column = next((c for c in self.settings["rank_by"] if c in table), None)
        reasons = pd.Series([None] * len(table), index=table.index, dtype=object)
        for concept, group in table.groupby("concept", sort=False):
            if len(group) <= cap:
                continue
            if rank_column is None:
                ordered = group.index
            else:
                scores = group[rank_column].to_numpy(dtype=np.float64)
                ordered = group.index[np.argsort(-scores, kind="stable")]
            for row in ordered[cap:]:
                reasons[row] = f"concept '{concept}' over its cap of {cap} ({len(group)} found)"
        return reasons
