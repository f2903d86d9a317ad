"""Caption word blocklist: reject samples whose caption names a blocked word. The text side of
the paper's offensive-content removal, and how a concept is held out of a curated set (the
world's demo keeps ``diamond`` and ``ring`` out to measure generality on them)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from emu_cli.curate.filter import Batch, Filter
from emu_cli.curate.resources import Resources

if TYPE_CHECKING:
    import pandas as pd


class CaptionWordsFilter(Filter):
    name = "caption_words"
    reads_captions = True
    description = "rejects captions naming a blocked word (whole words, any case)"
    phase = "scan"
    options = {"blocked": []}

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        blocked = {word.lower() for word in self.settings["blocked"]}
        found = []
        for item in batch.items:
            words = re.findall(r"[\w'-]+", item.caption.lower())
            found.append(next((w for w in words if w in blocked), None))
        return {"blocked_word": found}

    def decide(self, table: pd.DataFrame) -> pd.Series:
        return table["blocked_word"].map(
            lambda w: f"caption names '{w}'" if isinstance(w, str) else None
        )
