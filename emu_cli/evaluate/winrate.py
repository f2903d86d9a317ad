"""Win rates in the paper's form ("A preferred x%, B preferred y%, the rest ties") from the
votes in the annotation store, with bootstrap intervals over prompts.

Each pair gets one outcome from its annotators' votes: the plurality of A, B and tie (for
faithfulness, "both" and "neither" are ties, as in the paper). When A or B shares the top
count with another outcome, the pair is a tie: a split panel prefers neither.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from emu_cli.human.store import Vote

OUTCOMES = ("a", "b", "tie")
TIE_CHOICES = {"tie", "both", "neither"}


def pair_outcome(choices: Iterable[str]) -> str:
    counts = Counter("tie" if c in TIE_CHOICES else c for c in choices)
    if not counts:
        raise ValueError("a pair without votes has no outcome")
    top = max(counts.values())
    leaders = [outcome for outcome in OUTCOMES if counts[outcome] == top]
    return leaders[0] if len(leaders) == 1 else "tie"


def choices_by_pair(votes: Iterable[Vote], protocol: str) -> dict[str, list[str]]:
    """Comparison id -> the choices of its ``protocol`` votes."""
    by_pair: dict[str, list[str]] = {}
    for vote in votes:
        if vote.protocol == protocol:
            by_pair.setdefault(vote.comparison, []).append(vote.choice)
    return by_pair


def outcomes(votes: Iterable[Vote], protocol: str) -> dict[str, str]:
    """Comparison id -> outcome, for the comparisons that have votes of ``protocol``."""
    return {p: pair_outcome(choices) for p, choices in choices_by_pair(votes, protocol).items()}


@dataclass
class WinRate:
    a: float
    b: float
    tie: float
    pairs: int
    # 95 percent (by default) bootstrap interval of each share, resampling prompts
    interval: dict[str, tuple[float, float]]

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "tie": self.tie,
            "pairs": self.pairs,
            "interval": {k: list(v) for k, v in self.interval.items()},
        }


def win_rate(
    results: list[str],
    groups: list[str] | None = None,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> WinRate:
    """Shares of ``a``, ``b`` and ``tie`` among ``results``; the interval resamples whole
    ``groups`` (the prompt of each pair, so several images of one prompt move together)."""
    if not results:
        nan = float("nan")
        return WinRate(nan, nan, nan, 0, {o: (nan, nan) for o in OUTCOMES})
    unknown = set(results) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"outcomes must be a, b or tie, got {sorted(unknown)}")
    groups = groups or [str(i) for i in range(len(results))]
    names = sorted(set(groups))
    # counts[g, o]: how many pairs of group g ended in outcome o
    counts = np.zeros((len(names), len(OUTCOMES)))
    position = {name: i for i, name in enumerate(names)}
    for result, group in zip(results, groups, strict=True):
        counts[position[group], OUTCOMES.index(result)] += 1
    shares = counts.sum(0) / counts.sum()
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(names), size=(resamples, len(names)))
    totals = counts[drawn].sum(1)  # (resamples, outcomes)
    resampled = totals / totals.sum(1, keepdims=True)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail], axis=0)
    return WinRate(
        *(round(float(s), 4) for s in shares),
        len(results),
        {o: (round(float(low[i]), 4), round(float(high[i]), 4)) for i, o in enumerate(OUTCOMES)},
    )
