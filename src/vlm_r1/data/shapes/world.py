"""The shapes world: colours, shapes, splits, objects and how a scene of them is laid out.

Objects never overlap and keep a gap between them, so every box is the object's exact extent
and spatial words are unambiguous. The out-of-domain split may use colour-shape pairs
(``HELD_OUT``) that ``train`` and ``eval_in`` never show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 85, 215),
    "yellow": (230, 195, 25),
    "purple": (145, 60, 185),
    "orange": (240, 125, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon")
PLURALS = {s: s + "s" for s in SHAPES}
#: Colour-shape pairs that never appear in train/eval_in (one per colour and per shape).
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("green", "hexagon"),
        ("blue", "triangle"),
        ("yellow", "circle"),
        ("purple", "square"),
        ("orange", "diamond"),
    }
)
SPLITS: tuple[str, ...] = ("train", "eval_in", "eval_ood")
#: Object side as a fraction of the image's shorter side, by size word (before ``object_scale``).
SIZE_FRACTIONS = {"small": (0.11, 0.15), "large": (0.22, 0.29)}

Size = tuple[int, int]


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class World:
    """What every generated image shares: its side range and the object size scale."""

    image_size: tuple[int, int]
    object_scale: float = 1.0


def draw_image_size(spec: tuple[int, int], rng: np.random.Generator) -> Size:
    """A ``(width, height)`` with each side drawn from the ``(low, high)`` range ``spec``."""
    low, high = spec
    return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))


def _combo_allowed(colour: str, shape: str, split: str) -> bool:
    return split == "eval_ood" or (colour, shape) not in HELD_OUT


def make_scene(
    rng: np.random.Generator,
    image_size: Size,
    split: str,
    n_objects: int,
    object_scale: float = 1.0,
) -> list[Obj]:
    """Non-overlapping objects (with a gap) inside the image; held-out combos only in eval_ood.

    ``object_scale`` multiplies the object sizes (``SIZE_FRACTIONS`` of the image side): a tiny
    model from scratch learns to ground objects that cover several image tokens much sooner.
    Objects that do not fit after 60 placement attempts are left out."""
    width, height = image_size
    gap = max(3, min(image_size) // 40)
    scene: list[Obj] = []
    for _ in range(n_objects):
        while True:
            colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
            if _combo_allowed(colour, shape, split):
                break
        size = "small" if rng.random() < 0.5 else "large"
        low, high = (f * object_scale for f in SIZE_FRACTIONS[size])
        for _attempt in range(60):
            side = float(rng.uniform(low, high)) * min(image_size)
            w = max(6, round(side * float(rng.uniform(0.9, 1.1))))
            h = max(6, round(side * float(rng.uniform(0.9, 1.1))))
            if w >= width - 2 * gap or h >= height - 2 * gap:
                continue
            x1 = int(rng.integers(gap, width - w - gap + 1))
            y1 = int(rng.integers(gap, height - h - gap + 1))
            box = (x1, y1, x1 + w, y1 + h)
            if all(
                box[2] + gap <= o.box[0]
                or o.box[2] + gap <= box[0]
                or box[3] + gap <= o.box[1]
                or o.box[3] + gap <= box[1]
                for o in scene
            ):
                scene.append(Obj(shape, colour, size, box))
                break
    return scene
