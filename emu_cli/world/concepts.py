"""What the world's images show: subjects (shapes) x colors x backgrounds, and captions."""

from __future__ import annotations

import numpy as np

SUBJECTS = ("circle", "square", "triangle", "star", "heart", "diamond", "cross", "ring")
COLORS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 215, 40),
    "green": (50, 170, 70),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "pink": (240, 120, 180),
    "white": (245, 245, 245),
}
# Each background: a vertical gradient from the top color to the bottom color.
BACKGROUNDS = {
    "sunset": ((250, 150, 80), (120, 40, 110)),
    "sky": ((120, 180, 250), (220, 235, 255)),
    "sand": ((235, 210, 160), (200, 170, 110)),
    "grass": ((110, 180, 90), (50, 110, 50)),
    "night": ((20, 25, 60), (5, 5, 20)),
    "snow": ((235, 240, 245), (200, 210, 225)),
}
# In the pool, so pre-training sees them, but left out of the curated set for quality-tuning:
# evaluation on them measures whether quality-tuning keeps the model general.
HELD_OUT_SUBJECTS = ("diamond", "ring")
HELD_IN_SUBJECTS = tuple(s for s in SUBJECTS if s not in HELD_OUT_SUBJECTS)
CAPTION_TEMPLATES = (
    "a {color} {subject} on a {background} background",
    "photo of a {color} {subject} over {background}",
    "a {color} {subject} in front of a {background} scene",
    "{background} backdrop with a {color} {subject}",
    "a picture of a {color} {subject}, {background} behind it",
    "close-up of a {color} {subject} against the {background}",
)


def caption(subject: str, color: str, background: str, template: int = 0) -> str:
    return CAPTION_TEMPLATES[template % len(CAPTION_TEMPLATES)].format(
        subject=subject, color=color, background=background
    )


def concept_prompts(subjects: tuple[str, ...], per_subject: int, seed: int = 0) -> list[str]:
    """``per_subject`` captions per subject, colors, backgrounds and templates drawn at random."""
    rng = np.random.default_rng([seed, 13])
    return [
        caption(
            subject,
            list(COLORS)[int(rng.integers(len(COLORS)))],
            list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))],
            int(rng.integers(1000)),
        )
        for subject in subjects
        for _ in range(per_subject)
    ]
