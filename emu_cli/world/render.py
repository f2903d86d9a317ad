"""Draw one scene: a colored shape on a gradient background, supersampled for clean edges."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from emu_cli.world.concepts import BACKGROUNDS, COLORS

SUPERSAMPLE = 2


def _gradient(size: tuple[int, int], top: tuple, bottom: tuple) -> Image.Image:
    width, height = size
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    pixels = (1 - ramp) * np.array(top, np.float32) + ramp * np.array(bottom, np.float32)
    return Image.fromarray(np.broadcast_to(pixels, (height, width, 3)).astype(np.uint8))


def _polygon(subject: str, cx: float, cy: float, r: float, angle: float) -> list[tuple]:
    def ring(points: int, radii: list[float], phase: float = -math.pi / 2) -> list[tuple]:
        return [
            (
                cx + radii[i % len(radii)] * math.cos(phase + angle + 2 * math.pi * i / points),
                cy + radii[i % len(radii)] * math.sin(phase + angle + 2 * math.pi * i / points),
            )
            for i in range(points)
        ]

    if subject == "triangle":
        return ring(3, [r])
    if subject == "square":
        return ring(4, [r], phase=-math.pi / 4)
    if subject == "diamond":
        return ring(4, [r, 0.6 * r])
    if subject == "star":
        return ring(10, [r, 0.45 * r])
    if subject == "cross":
        w = 0.35 * r
        points = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
        ]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]
    if subject == "heart":
        return [
            (
                cx + r * 0.9 * math.sin(t) ** 3,
                cy
                - r
                * 0.8
                * (13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
                / 16,
            )
            for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)
        ]
    raise ValueError(f"no polygon for subject '{subject}'")


def render(
    subject: str,
    color: str,
    background: str,
    size: int,
    *,
    center: tuple[float, float] = (0.5, 0.5),
    scale: float = 0.3,
    angle: float = 0.0,
) -> Image.Image:
    """``scale`` is the shape's radius as a fraction of the image side."""
    big = size * SUPERSAMPLE
    top, bottom = BACKGROUNDS[background]
    image = _gradient((big, big), top, bottom)
    draw = ImageDraw.Draw(image)
    cx, cy, r = center[0] * big, center[1] * big, scale * big
    fill = COLORS[color]
    if subject == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif subject == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        inner = 0.55 * r
        hole = _gradient((big, big), top, bottom)
        mask = Image.new("L", (big, big), 0)
        ImageDraw.Draw(mask).ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=255)
        image.paste(hole, (0, 0), mask)
    else:
        draw.polygon(_polygon(subject, cx, cy, r, angle), fill=fill)
    return image.resize((size, size), Image.Resampling.LANCZOS)
