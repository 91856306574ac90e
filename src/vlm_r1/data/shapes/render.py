"""Drawing a scene: plain backgrounds in-domain, gradient + noise and outlined shapes out of it.

Every polygon touches all four sides of its box, so the drawn shape fills the box exactly and
the generated box is the true extent of the pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from vlm_r1.data.shapes.world import COLOURS, Obj, Size

#: "flat": a plain light background (``train``, ``eval_in``); "textured": a gradient with noise
#: and outlined shapes (``eval_ood``'s shifted style).
STYLES = ("flat", "textured")


def split_style(split: str) -> str:
    """The style a split draws in unless its task says otherwise."""
    return "textured" if split == "eval_ood" else "flat"


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Vertices in [0, 1]^2 touching all four sides, so the box is the shape's exact extent."""
    if shape == "square":
        return [(0, 0), (1, 0), (1, 1), (0, 1)]
    if shape == "triangle":
        return [(0.5, 0), (1, 1), (0, 1)]
    if shape == "diamond":
        return [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]
    if shape == "hexagon":
        pts = [(math.cos(math.pi / 3 * k), math.sin(math.pi / 3 * k)) for k in range(6)]
    elif shape == "star":
        pts = [
            (
                (1.0 if k % 2 == 0 else 0.45) * math.sin(math.pi / 5 * k),
                -(1.0 if k % 2 == 0 else 0.45) * math.cos(math.pi / 5 * k),
            )
            for k in range(10)
        ]
    else:
        raise ValueError(f"no polygon for {shape!r}")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [
        ((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in pts
    ]


def _draw(draw: ImageDraw.ImageDraw, obj: Obj, outline: tuple[int, int, int] | None) -> None:
    x1, y1, x2, y2 = obj.box
    # Pillow fills pixels x1..x2-1 when given the continuous box [x1, x2) shrunk by one pixel.
    w, h = x2 - x1 - 1, y2 - y1 - 1
    fill = COLOURS[obj.colour]
    width = 2 if outline else 0
    if obj.shape == "circle":
        draw.ellipse([x1, y1, x1 + w, y1 + h], fill=fill, outline=outline, width=width)
    else:
        pts = [(x1 + u * w, y1 + v * h) for u, v in _unit_polygon(obj.shape)]
        draw.polygon(pts, fill=fill, outline=outline, width=width)


def render(
    scene: Sequence[Obj], image_size: Size, style: str, rng: np.random.Generator
) -> Image.Image:
    """Draw ``scene`` in ``style`` (one of ``STYLES``)."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {STYLES}")
    width, height = image_size
    if style == "textured":
        top, bottom = rng.integers(120, 230, 3), rng.integers(120, 230, 3)
        t = np.linspace(0.0, 1.0, height)[:, None, None]
        background = (1 - t) * top + t * bottom + rng.normal(0, 12, (height, width, 3))
        image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
        outline: tuple[int, int, int] | None = (30, 30, 30)
    else:
        shade = int(rng.integers(232, 252))
        image = Image.new("RGB", image_size, (shade, shade, shade))
        outline = None
    draw = ImageDraw.Draw(image)
    for obj in scene:
        _draw(draw, obj, outline)
    return image
