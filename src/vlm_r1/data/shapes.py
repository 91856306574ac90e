"""A synthetic grounding world: coloured shapes with exact boxes, REC / OVD / counting tasks.

It stands in for RefCOCO (in-domain) and LISA-Grounding (out-of-domain) so the paper's central
comparison can run on a laptop:

* ``train`` / ``eval_in``: plain backgrounds; referring expressions name attributes
  ("the small red triangle") or one spatial relation ("the circle left of the blue square").
* ``eval_ood``: a shifted style (gradient + noise backgrounds, outlined shapes), colour-shape
  combinations never seen in ``train`` (``HELD_OUT``), and expressions of kinds ``train``
  never uses, which need reasoning: superlatives ("the leftmost star"), ordinals ("the second
  shape from the left"), negation ("the square that is not green").

Every REC expression is checked by ``resolve``: it must pick exactly one object, the target
(the generator asserts it; tests re-check). Objects never overlap, so boxes are exact and
spatial words are unambiguous (relations need clear separation, superlatives and ordinals a
margin). Output is VLM-R1 JSONL + PNG, read back by the same reader as user data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vlm_r1.data.sample import REC_QUESTION
from vlm_r1.errors import UserFacingError

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
#: ``locate`` is REC on single-object scenes ("the red circle"): basic grounding for warm starts.
TASK_KINDS = ("rec", "ovd", "count", "locate")


class ShapesSpecError(UserFacingError, ValueError):
    """A ``make-data shapes`` option is out of range (task, image size, scale, counts)."""


DEFAULT_TASKS = ("rec", "ovd", "count")
IN_DOMAIN_KINDS = ("attribute", "relation")
OOD_KINDS = ("superlative", "ordinal", "negation")
SIZE_FRACTIONS = {"small": (0.11, 0.15), "large": (0.22, 0.29)}


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
class Expression:
    """A structured referring expression; ``resolve`` evaluates it on a scene."""

    kind: str
    text: str
    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    relation: str | None = None
    anchor: dict[str, str | None] | None = None
    direction: str | None = None
    rank: int = 0
    negated: str | None = None


# ----------------------------------------------------------------------------------- geometry
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


# --------------------------------------------------------------------------------- resolving
def _matches(obj: Obj, shape: str | None, colour: str | None, size: str | None) -> bool:
    return (
        (shape is None or obj.shape == shape)
        and (colour is None or obj.colour == colour)
        and (size is None or obj.size == size)
    )


def _related(a: Obj, b: Obj, relation: str) -> bool:
    """Clear separation: ``a`` lies entirely on that side of ``b``."""
    return {
        "left of": a.box[2] < b.box[0],
        "right of": a.box[0] > b.box[2],
        "above": a.box[3] < b.box[1],
        "below": a.box[1] > b.box[3],
    }[relation]


_AXIS = {
    "left": (lambda o: o.cx, 1),
    "right": (lambda o: o.cx, -1),
    "top": (lambda o: o.cy, 1),
    "bottom": (lambda o: o.cy, -1),
    "largest": (lambda o: o.area, -1),
    "smallest": (lambda o: o.area, 1),
}


def _ordered(
    objs: list[tuple[int, Obj]], direction: str, rank: int, margin: float
) -> list[tuple[int, Obj]] | None:
    """Candidates ordered along ``direction``; None if the first ``rank + 2`` are too close to
    tell apart (a position margin, or a 1.5x area ratio for largest/smallest)."""
    key, sign = _AXIS[direction]
    ordered = sorted(objs, key=lambda io: sign * key(io[1]))
    head = ordered[: rank + 2]
    for (_, a), (_, b) in zip(head, head[1:], strict=False):
        gap = abs(key(a) - key(b))
        needed = margin if direction not in ("largest", "smallest") else 0.5 * min(key(a), key(b))
        if gap < needed:
            return None
    return ordered


def resolve(expr: Expression, scene: Sequence[Obj], image_size: tuple[int, int]) -> list[int]:
    """Indices of the objects the expression refers to (a valid expression gives exactly one)."""
    cands = [(i, o) for i, o in enumerate(scene) if _matches(o, expr.shape, expr.colour, expr.size)]
    if expr.kind in ("attribute", "locate"):
        return [i for i, _ in cands]
    if expr.kind == "relation":
        anchors = [o for o in scene if _matches(o, **expr.anchor)]  # type: ignore[arg-type]
        if len(anchors) != 1:
            return []
        return [
            i for i, o in cands if o is not anchors[0] and _related(o, anchors[0], expr.relation)
        ]  # type: ignore[arg-type]
    if expr.kind in ("superlative", "ordinal"):
        margin = 0.06 * min(image_size)
        ordered = _ordered(cands, expr.direction, expr.rank, margin)  # type: ignore[arg-type]
        if (
            ordered is None
            or len(ordered) <= expr.rank
            or (expr.kind == "superlative" and len(ordered) < 2)
        ):
            return []
        return [ordered[expr.rank][0]]
    if expr.kind == "negation":
        if expr.shape is not None:  # "the square that is not green"
            kept = [
                i for i, o in enumerate(scene) if o.shape == expr.shape and o.colour != expr.negated
            ]
            excluded = [o for o in scene if o.shape == expr.shape and o.colour == expr.negated]
        else:  # "the blue shape that is not a circle"
            kept = [
                i
                for i, o in enumerate(scene)
                if o.colour == expr.colour and o.shape != expr.negated
            ]
            excluded = [o for o in scene if o.colour == expr.colour and o.shape == expr.negated]
        return kept if excluded else []
    raise ValueError(f"unknown expression kind {expr.kind!r}")


# -------------------------------------------------------------------------------- expressions
Size = tuple[int, int]


def _describe(shape: str | None, colour: str | None, size: str | None) -> str:
    return " ".join([w for w in (size, colour) if w] + [shape or "shape"])


def _refers(expr: Expression, scene: list[Obj], target: int, image_size: Size) -> bool:
    return resolve(expr, scene, image_size) == [target]


def _attribute(
    scene: list[Obj], target: int, image_size: Size, rng: np.random.Generator
) -> Expression | None:
    """The shortest attribute description that picks out the target (RefCOCO-like)."""
    t = scene[target]
    for shape, colour, size in (
        (t.shape, None, None),
        (t.shape, t.colour, None),
        (t.shape, None, t.size),
        (t.shape, t.colour, t.size),
    ):
        expr = Expression("attribute", f"the {_describe(shape, colour, size)}", shape, colour, size)
        if _refers(expr, scene, target, image_size):
            return expr
    return None


def _relation(
    scene: list[Obj], target: int, image_size: Size, rng: np.random.Generator
) -> Expression | None:
    """ "the <target> <relation> the <anchor>", preferring relations needed to disambiguate."""
    t = scene[target]
    fallback = None
    for anchor_index in rng.permutation(len(scene)):
        if int(anchor_index) == target:
            continue
        anchor_expr = _attribute(scene, int(anchor_index), image_size, rng)
        if anchor_expr is None:
            continue
        anchor = {
            "shape": anchor_expr.shape,
            "colour": anchor_expr.colour,
            "size": anchor_expr.size,
        }
        for relation in rng.permutation(["left of", "right of", "above", "below"]):
            for shape, colour in ((t.shape, None), (t.shape, t.colour)):
                text = f"the {_describe(shape, colour, None)} {relation} {anchor_expr.text}"
                expr = Expression("relation", text, shape, colour, None, str(relation), anchor)
                if not _refers(expr, scene, target, image_size):
                    continue
                if sum(_matches(o, shape, colour, None) for o in scene) > 1:
                    return expr
                fallback = fallback or expr
    return fallback


_SUPERLATIVE_WORDS = {
    "left": "leftmost",
    "right": "rightmost",
    "top": "topmost",
    "bottom": "bottommost",
    "largest": "largest",
    "smallest": "smallest",
}


def _superlative(
    scene: list[Obj], target: int, image_size: Size, rng: np.random.Generator
) -> Expression | None:
    t = scene[target]
    for direction in rng.permutation(list(_SUPERLATIVE_WORDS)):
        for shape, colour in ((t.shape, None), (None, t.colour), (None, None)):
            text = f"the {_SUPERLATIVE_WORDS[str(direction)]} {_describe(shape, colour, None)}"
            expr = Expression("superlative", text, shape, colour, direction=str(direction), rank=0)
            if _refers(expr, scene, target, image_size):
                return expr
    return None


def _ordinal(
    scene: list[Obj], target: int, image_size: Size, rng: np.random.Generator
) -> Expression | None:
    names = {1: "second", 2: "third"}
    for direction in rng.permutation(["left", "right", "top", "bottom"]):
        for shape in (scene[target].shape, None):
            for rank in (1, 2):
                text = f"the {names[rank]} {_describe(shape, None, None)} from the {direction}"
                expr = Expression("ordinal", text, shape, None, direction=str(direction), rank=rank)
                if _refers(expr, scene, target, image_size):
                    return expr
    return None


def _negation(
    scene: list[Obj], target: int, image_size: Size, rng: np.random.Generator
) -> Expression | None:
    t = scene[target]
    for index in rng.permutation(len(scene)):
        other = scene[int(index)]
        if other.shape == t.shape and other.colour != t.colour:
            expr = Expression(
                "negation",
                f"the {t.shape} that is not {other.colour}",
                t.shape,
                negated=other.colour,
            )
        elif other.colour == t.colour and other.shape != t.shape:
            expr = Expression(
                "negation",
                f"the {t.colour} shape that is not a {other.shape}",
                None,
                t.colour,
                negated=other.shape,
            )
        else:
            continue
        if _refers(expr, scene, target, image_size):
            return expr
    return None


_MAKERS = {
    "attribute": _attribute,
    "relation": _relation,
    "superlative": _superlative,
    "ordinal": _ordinal,
    "negation": _negation,
}


# ------------------------------------------------------------------------------------- scenes
def _image_size(spec: tuple[int, int], rng: np.random.Generator) -> Size:
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


def render(
    scene: Sequence[Obj], image_size: Size, split: str, rng: np.random.Generator
) -> Image.Image:
    """Plain light background in-domain; gradient + noise and outlined shapes out of domain."""
    width, height = image_size
    if split == "eval_ood":
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


# ------------------------------------------------------------------------------------ samples
@dataclass(frozen=True)
class World:
    """What every generated image shares: its side range and the object size scale."""

    image_size: tuple[int, int]
    object_scale: float = 1.0


@dataclass
class ShapesRecord:
    """One generated sample before it is written as a JSONL row."""

    task: str
    question: str
    answer: str
    scene: list[Obj]
    image_size: Size
    meta: dict[str, Any] = field(default_factory=dict)


def _rec(rng: np.random.Generator, split: str, world: World) -> ShapesRecord:
    kinds = OOD_KINDS if split == "eval_ood" else IN_DOMAIN_KINDS
    while True:
        image_size = _image_size(world.image_size, rng)
        scene = make_scene(
            rng,
            image_size,
            split,
            int(rng.integers(3, 7) if split == "eval_ood" else rng.integers(2, 6)),
            world.object_scale,
        )
        if len(scene) < 2:
            continue
        targets = list(rng.permutation(len(scene)))
        if split == "eval_ood":  # prefer held-out colour-shape targets
            targets.sort(key=lambda i: (scene[i].colour, scene[i].shape) not in HELD_OUT)
        for kind in rng.permutation(kinds):
            for target in targets:
                expr = _MAKERS[str(kind)](scene, int(target), image_size, rng)
                if expr is None:
                    continue
                found = resolve(expr, scene, image_size)
                assert found == [int(target)], f"generator bug: {expr.text!r} resolves to {found}"
                box = list(scene[int(target)].box)
                meta = {"kind": expr.kind, "expression": asdict(expr), "target": int(target)}
                return ShapesRecord(
                    "rec", REC_QUESTION.format(expr.text), json.dumps(box), scene, image_size, meta
                )


def _ovd(rng: np.random.Generator, split: str, world: World) -> ShapesRecord:
    image_size = _image_size(world.image_size, rng)
    scene = make_scene(rng, image_size, split, int(rng.integers(1, 7)), world.object_scale)
    present = sorted({o.shape for o in scene})
    n_cats = int(rng.integers(1, 4))
    chosen = list(
        rng.choice(present, size=min(len(present), int(rng.integers(1, n_cats + 1))), replace=False)
    )
    absent = [s for s in SHAPES if s not in present]
    if absent and rng.random() < 0.7:
        chosen += list(
            rng.choice(absent, size=min(len(absent), n_cats - len(chosen) + 1), replace=False)
        )
    if rng.random() < 0.1 and absent:  # sometimes nothing listed is there: the answer is "None"
        chosen = list(rng.choice(absent, size=min(2, len(absent)), replace=False))
    chosen = [str(c) for c in rng.permutation(chosen)]
    objects = [{"bbox_2d": list(o.box), "label": o.shape} for o in scene if o.shape in chosen]
    question = (
        f"Please carefully check the image and detect the following objects: {', '.join(chosen)}."
    )
    answer = f"```json\n{json.dumps(objects)}\n```" if objects else "None"
    return ShapesRecord(
        "ovd", question, answer, scene, image_size, {"categories": chosen, "kind": "ovd"}
    )


def _count(rng: np.random.Generator, split: str, world: World) -> ShapesRecord:
    image_size = _image_size(world.image_size, rng)
    scene = make_scene(rng, image_size, split, int(rng.integers(1, 8)), world.object_scale)
    anchor = scene[int(rng.integers(len(scene)))]
    colour = anchor.colour if rng.random() < 0.5 else None
    shape = anchor.shape if rng.random() < 0.8 or colour is None else None
    if rng.random() < 0.15:  # sometimes ask about something absent
        shape = str(rng.choice(SHAPES))
    n = sum(_matches(o, shape, colour, None) for o in scene)
    noun = " ".join([w for w in (colour,) if w] + [PLURALS[shape] if shape else "shapes"])
    return ShapesRecord(
        "count",
        f"How many {noun} are there in the image?",
        str(n),
        scene,
        image_size,
        {"kind": "count", "shape": shape, "colour": colour},
    )


def _locate(rng: np.random.Generator, split: str, world: World) -> ShapesRecord:
    while True:
        image_size = _image_size(world.image_size, rng)
        scene = make_scene(rng, image_size, split, 1, world.object_scale)
        if scene:
            break
    obj = scene[0]
    expr = Expression("locate", f"the {obj.colour} {obj.shape}", obj.shape, obj.colour)
    meta = {"kind": "locate", "expression": asdict(expr), "target": 0}
    return ShapesRecord(
        "rec", REC_QUESTION.format(expr.text), json.dumps(list(obj.box)), scene, image_size, meta
    )


_TASK_MAKERS = {"rec": _rec, "ovd": _ovd, "count": _count, "locate": _locate}


def generate(
    task: str,
    split: str,
    n: int,
    seed: int,
    image_size: tuple[int, int],
    object_scale: float = 1.0,
) -> Iterator[ShapesRecord]:
    """``n`` records of one task and split, deterministic for ``seed``."""
    if task not in _TASK_MAKERS:
        raise ShapesSpecError(f"unknown shapes task {task!r}; choose from {TASK_KINDS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    for index in range(n):
        rng = np.random.default_rng([seed, SPLITS.index(split), TASK_KINDS.index(task), index])
        yield _TASK_MAKERS[task](rng, split, World(image_size, object_scale))


def parse_image_size(spec: str | int) -> tuple[int, int]:
    """``"224"`` -> (224, 224); ``"112..448"`` -> random sides in that range per image."""
    text = str(spec)
    low, _, high = text.partition("..")
    try:
        bounds = (int(low), int(high or low))
    except ValueError as err:
        raise ShapesSpecError(f"--image-size must be N or MIN..MAX, got {text!r}") from err
    if not 32 <= bounds[0] <= bounds[1] <= 4096:
        raise ShapesSpecError(f"--image-size must lie in 32..4096 with MIN <= MAX, got {text!r}")
    return bounds


def write_shapes(
    out: str | Path,
    n_train: int = 2000,
    n_eval: int = 200,
    seed: int = 0,
    image_size: str | int = "224",
    tasks: Sequence[str] = DEFAULT_TASKS,
    object_scale: float = 1.0,
) -> dict[str, Path]:
    """Write ``{task}_{split}.jsonl`` files and PNGs under ``out``; returns the JSONL paths."""
    if not 0.25 <= object_scale <= 3.0:
        raise ShapesSpecError(f"object_scale must lie in 0.25..3, got {object_scale}")
    if n_train < 0 or n_eval < 0:
        raise ShapesSpecError(f"sample counts must be >= 0, got n_train={n_train}, n_eval={n_eval}")
    out = Path(out)
    size_spec = parse_image_size(image_size)
    written: dict[str, Path] = {}
    for task in tasks:
        for split in SPLITS:
            n = n_train if split == "train" else n_eval
            folder = out / "images" / split
            folder.mkdir(parents=True, exist_ok=True)
            path = out / f"{task}_{split}.jsonl"
            with open(path, "w", encoding="utf-8") as handle:
                records = generate(task, split, n, seed, size_spec, object_scale)
                for index, record in enumerate(records):
                    name = f"images/{split}/{task}_{index:06d}.png"
                    rng = np.random.default_rng(
                        [seed, SPLITS.index(split), TASK_KINDS.index(task), index, 1]
                    )
                    render(record.scene, record.image_size, split, rng).save(
                        out / name, compress_level=1
                    )
                    row = {
                        "id": f"{task}-{split}-{index}",
                        "image": name,
                        "task": record.task,
                        "split": split,
                        "width": record.image_size[0],
                        "height": record.image_size[1],
                        "conversations": [
                            {"from": "human", "value": "<image>" + record.question},
                            {"from": "gpt", "value": record.answer},
                        ],
                        **({"accu_reward_method": "count"} if task == "count" else {}),
                        "objects": [[o.shape, o.colour, o.size, list(o.box)] for o in record.scene],
                        **record.meta,
                    }
                    handle.write(json.dumps(row) + "\n")
            written[f"{task}_{split}"] = path
    return written
