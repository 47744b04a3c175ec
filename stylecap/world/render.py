"""Draw a scene as a small RGB image.

Besides what captions say (shape, colour, size, position) each image carries detail no caption
mentions: per-object tints, small rotations, a lighting gradient and a faint texture. Real images hold
more than their captions too, and that surplus is part of what makes a modality gap.
"""
from __future__ import annotations

import math
import random
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from stylecap.world.scenes import GRID, Obj, Scene, vocab

SUPERSAMPLE = 2  # draw at twice the size and shrink: smooth edges at 64 px
GRADIENT_MAX = 16  # strongest lighting gradient, in 0–255 levels from centre to edge
STRIPE_AMPLITUDE = 4.0  # faint: a texture, not a pattern worth a word
STRIPE_PITCH = (6.0, 24.0)  # pixels per stripe period, drawn per image


def render(scene: Scene, size: int = 64) -> Image.Image:
    v = vocab()
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), _rgb(v["backgrounds"][scene.background]["rgb"], scene.tint))
    draw = ImageDraw.Draw(image)
    cell = big / GRID
    for obj in scene.objects:
        centre = ((obj.col + 0.5 + obj.dx) * cell, (obj.row + 0.5 + obj.dy) * cell)
        radius = v["sizes"][obj.size]["radius"] * cell
        fill = _rgb(v["colours"][obj.colour]["rgb"], obj.tint)
        if obj.shape == "circle":
            x, y = centre
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
        else:
            draw.polygon(_outline(obj, centre, radius), fill=fill)
    pixels = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    return Image.fromarray(_lighting_and_texture(pixels, scene.texture_seed))


def _rgb(base: list[int], tint: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(min(255, max(0, b + t)) for b, t in zip(base, tint, strict=True))


# Unit outlines (radius 1, pointing up) as (angle in degrees, distance) pairs. Shapes that a 64-pixel
# image cannot tell apart (a hexagon from a circle, a rhombus from a tilted square) are left out: a
# caption the picture cannot support would only measure guessing.
def _ring(corners: int, start: float = -90.0, inner: float | None = None) -> list[tuple[float, float]]:
    step = 360.0 / corners
    points = [(start + i * step, 1.0) for i in range(corners)]
    if inner is None:
        return points
    return [p for a, d in points for p in ((a, d), (a + step / 2, inner))]


_CROSS_ARM = 0.34  # half-width of a cross arm, relative to the radius
_OUTLINES = {
    "square": _ring(4, start=-45.0),
    "triangle": _ring(3),
    "star": _ring(5, inner=0.45),
    "cross": [(math.degrees(math.atan2(y, x)), math.hypot(x, y)) for x, y in (
        (_CROSS_ARM, -1), (_CROSS_ARM, -_CROSS_ARM), (1, -_CROSS_ARM), (1, _CROSS_ARM),
        (_CROSS_ARM, _CROSS_ARM), (_CROSS_ARM, 1), (-_CROSS_ARM, 1), (-_CROSS_ARM, _CROSS_ARM),
        (-1, _CROSS_ARM), (-1, -_CROSS_ARM), (-_CROSS_ARM, -_CROSS_ARM), (-_CROSS_ARM, -1))],
}
_SCALE = {"square": 0.9, "cross": 0.95}  # corners reach further out: shrink to a similar area


def _outline(obj: Obj, centre: tuple[float, float], radius: float) -> list[tuple[float, float]]:
    x, y = centre
    r = radius * _SCALE.get(obj.shape, 1.0)
    return [(x + r * d * math.cos(math.radians(a + obj.angle)),
             y + r * d * math.sin(math.radians(a + obj.angle))) for a, d in _OUTLINES[obj.shape]]


@lru_cache(maxsize=4)
def _axes(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    return axis[None, :], axis[:, None]


def _lighting_and_texture(pixels: np.ndarray, seed: int) -> np.ndarray:
    """A lighting gradient and faint stripes at a random angle and pitch. Smooth patterns rather
    than pixel noise: they vary every image as much, and keep PNGs small and quick to write."""
    rng = random.Random(seed)
    theta, stripe_angle = rng.uniform(0, 2 * math.pi), rng.uniform(0, math.pi)
    strength, pitch, phase = rng.uniform(0, GRADIENT_MAX), rng.uniform(*STRIPE_PITCH), rng.uniform(0, 2 * math.pi)
    x, y = _axes(pixels.shape[0])
    gradient = strength * (math.cos(theta) * x + math.sin(theta) * y)
    along = (math.cos(stripe_angle) * x + math.sin(stripe_angle) * y) * (pixels.shape[0] / 2)  # pixels
    pixels += (gradient + STRIPE_AMPLITUDE * np.sin(2 * math.pi * along / pitch + phase))[..., None]
    return np.clip(pixels, 0, 255).round().astype(np.uint8)
