"""Small statistics shared by validation, curation and evaluation."""

from __future__ import annotations

import numpy as np


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation (continuous scores: ties are negligible)."""
    rank_x = np.argsort(np.argsort(x)).astype(float)
    rank_y = np.argsort(np.argsort(y)).astype(float)
    return float(np.corrcoef(rank_x, rank_y)[0, 1])
