"""Hidden photographic factors of a scene and the documented formula for its true appeal.

The factors follow the paper's guideline categories for photogenic images:

- composition: ``center`` (x, y), ``scale`` (radius / side), ``angle``. Best with the subject
  on a rule-of-thirds point, radius 0.18-0.32, wholly in frame.
- lighting: ``exposure`` in stops. Best at 0: neither dark nor blown out.
- color: ``saturation``, ``contrast``, and how far the subject's color is from the
  background's. Best vivid, contrasty, the subject standing out.
- background: ``clutter`` (0-1) and ``depth`` (0-1, background blur). Best clean, or with the
  clutter thrown out of focus.
- technical: ``blur`` (px at 32 px), ``noise`` (sd), ``jpeg_quality``. Best sharp, clean,
  lightly compressed.

Every sub-score rises linearly between two documented points and never drops below a small
floor, so a bad picture is still ranked by how bad it is. Penalties start where a defect becomes
visible at 32 px, the smallest generation size: a judge, like a person, can only rank what it
can see. Each category's score is in (0, 1]; the
true appeal is their geometric mean, so one bad category sinks a picture: a photogenic "needle"
must be good in every category, as the paper's specialists demand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from emu_cli.world.concepts import BACKGROUNDS, COLORS

CATEGORIES = ("composition", "lighting", "color", "background", "technical")
THIRDS = [(x, y) for x in (1 / 3, 2 / 3) for y in (1 / 3, 2 / 3)]


@dataclass(frozen=True)
class Factors:
    center: tuple[float, float]
    scale: float
    angle: float
    exposure: float
    saturation: float
    contrast: float
    clutter: float
    depth: float
    blur: float
    noise: float
    jpeg_quality: int

    def to_dict(self) -> dict:
        return asdict(self)


def sample_factors(rng: np.random.Generator) -> Factors:
    """Draw factors as a noisy web pool has them: mostly mediocre, rarely good in every way."""
    return Factors(
        center=(float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.15, 0.85))),
        scale=float(rng.uniform(0.07, 0.45)),
        angle=float(rng.uniform(-0.4, 0.4)),
        exposure=float(np.clip(rng.normal(0.0, 0.8), -2.0, 2.0)),
        saturation=float(rng.uniform(0.0, 1.3)),
        contrast=float(rng.uniform(0.35, 1.2)),
        clutter=float(rng.beta(1.2, 1.5)),
        depth=float(rng.uniform(0.0, 1.0)),
        blur=float(rng.exponential(0.6)),
        noise=float(rng.exponential(0.04)),
        jpeg_quality=int(rng.integers(8, 96)),
    )


def clean_factors(rng: np.random.Generator) -> Factors:
    """A well-made picture: the kind a faithfulness judge is validated on."""
    thirds = THIRDS[int(rng.integers(4))]
    return Factors(
        center=(
            thirds[0] + float(rng.uniform(-0.04, 0.04)),
            thirds[1] + float(rng.uniform(-0.04, 0.04)),
        ),
        scale=float(rng.uniform(0.2, 0.28)),
        angle=float(rng.uniform(-0.2, 0.2)),
        exposure=0.0,
        saturation=1.0,
        contrast=1.0,
        clutter=0.0,
        depth=0.5,
        blur=0.0,
        noise=0.0,
        jpeg_quality=95,
    )


def _ramp(value: float, low: float, high: float, floor: float = 0.0) -> float:
    """``floor`` at ``low``, 1 at ``high``, linear between (either order)."""
    return floor + (1.0 - floor) * float(np.clip((value - low) / (high - low), 0.0, 1.0))


def color_separation(color: str, background: str) -> float:
    """How far the subject's color is from the background's mean color, in [0, 1]."""
    top, bottom = BACKGROUNDS[background]
    mean = np.add(top, bottom) / 2
    return _ramp(float(np.linalg.norm(np.subtract(COLORS[color], mean))) / 255, 0.1, 0.45)


def in_frame(center: tuple[float, float], scale: float) -> float:
    """Fraction of the subject's radius inside the frame on its most cut-off side."""
    margin = min(center[0], 1 - center[0], center[1], 1 - center[1])
    return float(np.clip(margin / scale, 0.0, 1.0))


def category_scores(factors: Factors, color: str, background: str) -> dict[str, float]:
    thirds_distance = min(math.dist(factors.center, point) for point in THIRDS)
    placement = 1.0 - 0.5 * _ramp(thirds_distance, 0.03, 0.24)  # dead centre still scores 0.5
    size = _ramp(factors.scale, 0.07, 0.18, 0.1) * (1.0 - 0.6 * _ramp(factors.scale, 0.32, 0.45))
    framed = _ramp(in_frame(factors.center, factors.scale), 0.3, 1.0, 0.1)
    composition = placement * size * framed
    lighting = 0.05 + 0.95 * math.exp(-((factors.exposure / 0.7) ** 2))
    color = (
        _ramp(factors.saturation, 0.0, 0.9, 0.1)
        * _ramp(factors.contrast, 0.35, 0.9, 0.2)
        * (0.4 + 0.6 * color_separation(color, background))
    )
    background_score = 1.0 - factors.clutter * (1.0 - 0.75 * factors.depth)
    technical = (
        (0.1 + 0.9 * math.exp(-((max(0.0, factors.blur - 0.3) / 0.8) ** 2)))
        * _ramp(factors.noise, 0.16, 0.015, 0.1)
        * _ramp(factors.jpeg_quality, 5, 35, 0.1)
    )
    return {
        "composition": composition,
        "lighting": lighting,
        "color": color,
        "background": background_score,
        "technical": technical,
    }


def appeal_from_categories(scores: dict[str, float] | np.ndarray) -> float | np.ndarray:
    """The true appeal: the geometric mean of the category scores (works on arrays too)."""
    if isinstance(scores, dict):
        return float(np.prod([scores[c] for c in CATEGORIES]) ** (1 / len(CATEGORIES)))
    return np.prod(scores, axis=-1) ** (1 / len(CATEGORIES))


def true_appeal(factors: Factors, color: str, background: str) -> float:
    return appeal_from_categories(category_scores(factors, color, background))
