"""The filter contract: what a curation filter is, how it scores, how it decides.

A filter is a class registered through the ``register_filters`` hook. ``emu filter`` builds it
with the options of the user's config, calls :meth:`Filter.score` on batches of decoded
samples in worker processes (or Ray tasks), and calls :meth:`Filter.decide` once, in the driver,
on the table of every sample that reached it. Scoring is parallel; deciding sees the whole
pool, which is what thresholds by kept fraction, duplicate removal and concept caps need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from emu_cli.config import value_kind
from emu_cli.curate.batch import Batch, Item

__all__ = ["Batch", "Filter", "Item", "Threshold"]

if TYPE_CHECKING:
    import pandas as pd

    from emu_cli.curate.resources import Resources

PHASES = ("scan", "score")


@dataclass(frozen=True)
class Threshold:
    """Keep a sample when its score is within [min, max], or in the best ``keep_fraction``."""

    min: float | None = None
    max: float | None = None
    keep_fraction: float | None = None

    KEYS: ClassVar[tuple[str, ...]] = ("min", "max", "keep_fraction")

    def __post_init__(self) -> None:
        if self.keep_fraction is not None and not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.keep_fraction is not None and (self.min is not None or self.max is not None):
            raise ValueError("a threshold is either by value (min/max) or by keep_fraction")

    @property
    def by_value(self) -> bool:
        return self.keep_fraction is None

    def failing(self, values: np.ndarray, higher_is_better: bool) -> tuple[np.ndarray, str]:
        """A boolean mask of the values that fail, and the rule in words."""
        values = np.asarray(values, dtype=np.float64)
        if self.keep_fraction is not None:
            if len(values) == 0:
                return np.zeros(0, bool), "no sample"
            # Rank, not quantile: exactly ceil(fraction * n) survive, ties broken by order.
            keep = int(np.ceil(self.keep_fraction * len(values)))
            order = np.argsort(-values if higher_is_better else values, kind="stable")
            failing = np.ones(len(values), bool)
            failing[order[:keep]] = False
            side = "top" if higher_is_better else "lowest"
            return failing, f"outside the {side} {self.keep_fraction:.0%}"
        failing = np.isnan(values)
        rules = []
        if self.min is not None:
            failing |= values < self.min
            rules.append(f">= {self.min:g}")
        if self.max is not None:
            failing |= values > self.max
            rules.append(f"<= {self.max:g}")
        return failing, "must be " + " and ".join(rules) if rules else "not a number"


class Filter:
    """Base class of curation filters. Subclass, set the class attributes, register the class.

    - ``name``: unique, used in configs and as the reject reason.
    - ``phase``: ``"scan"`` filters are cheap and see every decodable sample; ``"score"``
      filters (models) only see the survivors of all scan filters.
    - ``column``: the score column that a threshold applies to; None when the filter decides
      by itself (override :meth:`decide`). Columns a filter returns from :meth:`score` go in
      the manifest, except those named ``_like_this`` (working data, e.g. thumbnails).
    - ``reads_captions``: True for a filter that reads captions; a pool of images alone (no
      captions) is curated only by filters that do not.
    - ``options``: the filter's own options and their defaults; a value given must be of its
      default's kind (number, text, list, bool; a default of None takes anything).
      A filter with a ``column`` also takes ``min``/``max``/``keep_fraction`` for it, with
      ``default_threshold`` when none is given (one without refuses them). Check what else
      an option needs in ``__init__``, which runs before any worker starts.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    phase: ClassVar[str] = "score"
    column: ClassVar[str | None] = None
    higher_is_better: ClassVar[bool] = True
    reads_captions: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}
    default_threshold: ClassVar[dict[str, float]] = {}

    def __init__(self, **options: Any):
        # a threshold applies to a score column; a filter that decides by its own rule has none
        thresholds = set(Threshold.KEYS) if self.column is not None else set()
        unknown = sorted(set(options) - set(self.options) - thresholds)
        if unknown:
            known = ", ".join(sorted({*self.options, *thresholds})) or "none"
            raise ValueError(
                f"filter '{self.name}': unknown option(s) {', '.join(unknown)} (known: {known})"
            )
        for option, value in options.items():
            if option in Threshold.KEYS and value is None:  # a threshold left unset
                continue
            expected = value_kind(self.options.get(option, 0.0))  # thresholds are numbers
            if expected and value_kind(value) != expected:
                raise ValueError(
                    f"filter '{self.name}': option {option} must be {expected}, not {value!r}"
                )
        given = {k: options[k] for k in Threshold.KEYS if options.get(k) is not None}
        self.threshold = Threshold(**(given or self.default_threshold))
        self.settings = {**self.options, **{k: v for k, v in options.items() if k in self.options}}

    def config(self) -> dict[str, Any]:
        """What decides this filter's results: recorded so a resumed run can check it."""
        return {"settings": self.settings, "threshold": self.threshold.__dict__}

    @property
    def decides_alone(self) -> bool:
        """True when a sample's fate depends on its own scores only, so a worker can skip
        the later, costlier filters for the samples this one rejects."""
        return self.column is not None and self.threshold.by_value

    def setup(self, resources: Resources) -> None:
        """Load models or other state in the process that will call :meth:`score`."""

    def score(self, batch: Batch, resources: Resources) -> dict[str, list]:
        """Score columns for each item of the batch, in order."""
        raise NotImplementedError

    def decide(self, table: pd.DataFrame) -> pd.Series:
        """For each row (samples that reached this filter, in pool order): None to keep, or
        the reason it is rejected."""
        import pandas as pd

        assert self.column is not None, f"filter '{self.name}' must override decide()"
        values = table[self.column].to_numpy(dtype=np.float64)
        failing, rule = self.threshold.failing(values, self.higher_is_better)
        reasons = [
            f"{self.column} {v:.4g} {rule}" if f else None
            for v, f in zip(values, failing, strict=True)
        ]
        return pd.Series(reasons, index=table.index, dtype=object)
