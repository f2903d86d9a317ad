"""Draw a scene: a colored shape on a gradient background, then photograph it badly or well.

Shapes are drawn at twice the size and reduced for clean edges. The order follows a camera:
scene (background, clutter, depth of field, subject), then exposure, color and contrast, lens
blur, sensor noise; JPEG compression happens when the image is encoded.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageStat

from emu_cli.world.concepts import BACKGROUNDS, COLORS, SUBJECTS
from emu_cli.world.factors import Factors

SUPERSAMPLE = 2


def _gradient(size: tuple[int, int], top: tuple, bottom: tuple) -> Image.Image:
    width, height = size
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    column = (1 - ramp) * np.array(top, np.float32) + ramp * np.array(bottom, np.float32)
    return Image.fromarray(column.astype(np.uint8)).resize(size, Image.Resampling.NEAREST)


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


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    subject: str,
    cx: float,
    cy: float,
    r: float,
    angle: float,
    fill: tuple,
    hole: tuple | None = None,
) -> None:
    if subject in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        if subject == "ring":
            inner = 0.55 * r
            draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=hole)
    else:
        draw.polygon(_polygon(subject, cx, cy, r, angle), fill=fill)


def _clutter(image: Image.Image, amount: float, rng: np.random.Generator) -> None:
    """Small distracting shapes and strokes in random colors behind the subject."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    side = min(width, height)
    for _ in range(int(round(amount * 14))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.1) * side
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.4:
            angle = rng.uniform(0, math.pi)
            dx, dy = 2 * r * math.cos(angle), 2 * r * math.sin(angle)
            draw.line((x - dx, y - dy, x + dx, y + dy), fill=fill, width=max(1, int(r / 3)))
        else:
            shape = SUBJECTS[int(rng.integers(len(SUBJECTS)))]
            _draw_shape(draw, shape, x, y, r, rng.uniform(-1, 1), fill, fill)


def fast_blur(image: Image.Image, radius: float) -> Image.Image:
    """A Gaussian blur; large radii blur a reduced copy (a blurred image has no fine detail to
    lose), which is several times faster at the same look."""
    factor = round(radius / 1.5)
    if factor < 2:
        return image.filter(ImageFilter.GaussianBlur(radius))
    small = image.reduce(factor).filter(ImageFilter.GaussianBlur(radius / factor))
    return small.resize(image.size, Image.Resampling.BILINEAR)


def render(
    subject: str,
    color: str,
    background: str,
    size: int | tuple[int, int],
    factors: Factors,
    rng: np.random.Generator,
) -> Image.Image:
    """The scene under ``factors``; ``rng`` draws only the clutter's layout and the noise."""
    width, height = (size, size) if isinstance(size, int) else size
    big = (width * SUPERSAMPLE, height * SUPERSAMPLE)
    top, bottom = BACKGROUNDS[background]
    image = _gradient(big, top, bottom)
    if factors.clutter > 0:
        _clutter(image, factors.clutter, rng)
    side = min(big)
    if factors.depth > 0 and factors.clutter > 0:  # depth of field: the background out of focus
        image = fast_blur(image, factors.depth * side / 40)
    draw = ImageDraw.Draw(image)
    cx, cy = factors.center[0] * big[0], factors.center[1] * big[1]
    hole = tuple(int(v) for v in np.add(top, bottom) // 2)
    _draw_shape(draw, subject, cx, cy, factors.scale * side, factors.angle, COLORS[color], hole)
    image = image.reduce(SUPERSAMPLE)
    # Exposure (a gain in stops) then contrast about the mean: one lookup table per value.
    gain = 2.0**factors.exposure
    mean = gain * float(np.mean(ImageStat.Stat(image).mean))
    values = np.arange(256, dtype=np.float32) * gain
    table = np.clip((values - mean) * factors.contrast + mean, 0, 255).astype(np.uint8)
    image = image.point(table.tolist() * 3)
    image = ImageEnhance.Color(image).enhance(factors.saturation)
    if factors.blur > 0.05:
        image = fast_blur(image, factors.blur * min(width, height) / 32)
    if factors.noise > 0:
        noise = rng.standard_normal((height, width, 3), dtype=np.float32) * (factors.noise * 255)
        noisy = np.asarray(image, np.float32) + noise
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return image


@lru_cache(maxsize=8)
def font(pixels: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans Bold, the TrueType font matplotlib ships: real glyphs, no download."""
    import matplotlib

    path = f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans-Bold.ttf"
    return ImageFont.truetype(path, pixels)


def overlay_text(image: Image.Image, text: str, rng: np.random.Generator) -> Image.Image:
    """A watermark or slogan across the picture, large enough for OCR at the source size."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    width, height = image.size
    size = max(8, int(min(width, height) * rng.uniform(0.1, 0.16)))
    typeface = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=typeface)
    while right - left > width * 0.95 and size > 8:
        size -= 2
        typeface = font(size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=typeface)
    x = rng.uniform(0, max(1, width - (right - left)))
    y = rng.uniform(0, max(1, height - (bottom - top) - top))
    light = rng.random() < 0.5
    fill, stroke = ((255, 255, 255), (0, 0, 0)) if light else ((0, 0, 0), (255, 255, 255))
    draw.text(
        (x, y), text, font=typeface, fill=fill, stroke_width=max(1, size // 12), stroke_fill=stroke
    )
    return image
