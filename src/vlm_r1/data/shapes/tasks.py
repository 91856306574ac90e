"""The shapes tasks (REC, OVD, counting, locate, point, REC mix, named): a scene, question, answer.

Each record has its own random generator, seeded by (seed, split, task, index), so a record
does not depend on how many came before it or on the other tasks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from vlm_r1.data.sample import REC_QUESTION
from vlm_r1.data.shapes.expressions import Expression, matches, resolve
from vlm_r1.data.shapes.referring import EXPRESSION_MAKERS, IN_DOMAIN_KINDS, OOD_KINDS
from vlm_r1.data.shapes.render import STYLES
from vlm_r1.data.shapes.spec import TASK_KINDS, ShapesSpecError
from vlm_r1.data.shapes.world import (
    HELD_OUT,
    PLURALS,
    SHAPES,
    SPLITS,
    Obj,
    Size,
    World,
    draw_image_size,
    make_scene,
)


@dataclass
class ShapesRecord:
    """One generated sample before it is written as a JSONL row."""

    task: str
    question: str
    answer: str
    scene: list[Obj]
    image_size: Size
    meta: dict[str, Any] = field(default_factory=dict)
    style: str | None = None
    """How the image is drawn (``render.STYLES``); ``None``: the split's own style."""


#: A referring-expression maker: (scene, target, image size, rng) -> an expression or None.
Maker = Callable[[list[Obj], int, Size, np.random.Generator], Expression | None]


def _referred(
    rng: np.random.Generator, split: str, world: World, makers: dict[str, Maker]
) -> tuple[Size, list[Obj], int, Expression]:
    """A scene and a target that an expression of one of ``makers``' kinds picks out alone
    (``resolve`` checks it): 2-5 objects (3-6 and held-out colour-shape targets first out of
    domain). REC and point draw their scenes the same way."""
    while True:
        image_size = draw_image_size(world.image_size, rng)
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
        for kind in rng.permutation(list(makers)):
            for target in targets:
                expr = makers[str(kind)](scene, int(target), image_size, rng)
                if expr is None:
                    continue
                found = resolve(expr, scene, image_size)
                assert found == [int(target)], f"generator bug: {expr.text!r} resolves to {found}"
                return image_size, scene, int(target), expr


def _rec(rng: np.random.Generator, split: str, world: World) -> ShapesRecord:
    kinds = OOD_KINDS if split == "eval_ood" else IN_DOMAIN_KINDS
    image_size, scene, target, expr = _referred(
        rng, split, world, {kind: EXPRESSION_MAKERS[kind] for kind in kinds}
    )
    box = list(scene[target].box)
    meta = {"kind": expr.kind, "expression": asdict(expr), "target": target}
    return ShapesRecord(
        "rec", REC_QUESTION.format(expr.text), json.dumps(box), scene, image_size, meta
    )


def _rec_in_both_styles(
    rng: np.random.Generator, split: str, world: World, makers: dict[str, Maker]
) -> ShapesRecord:
    """REC with an expression of one of ``makers``' kinds, drawn in either style. Held-out
    colour-shape pairs stay out of ``train`` and ``eval_in`` as everywhere."""
    image_size, scene, target, expr = _referred(rng, split, world, makers)
    style = str(rng.choice(STYLES))
    meta = {"kind": expr.kind, "expression": asdict(expr), "target": target, "style": style}
    return ShapesRecord(
        "rec",
        REC_QUESTION.format(expr.text),
        json.dumps(list(scene[target].box)),
        scene,
        image_size,
        meta,
        style,
    )


def _rec_mix(rng: np.random.Generator, split: str, world: World) -> ShapesRecord:
    """REC with every expression kind, in either style: what a broadly pretrained model has
    seen."""
    return _rec_in_both_styles(rng, split, world, EXPRESSION_MAKERS)


def _rec_negation(rng: np.random.Generator, split: str, world: World) -> ShapesRecord:
    """REC whose expression is a negation ("the square that is not green"), in either style.
    Few scenes admit one (a pair that shares a shape or a colour, one of them the target), so
    ``rec_mix`` has few (~7%): this task has as many as it is asked for."""
    return _rec_in_both_styles(rng, split, world, {"negation": EXPRESSION_MAKERS["negation"]})


def _ovd(rng: np.random.Generator, split: str, world: World) -> ShapesRecord:
    image_size = draw_image_size(world.image_size, rng)
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
    image_size = draw_image_size(world.image_size, rng)
    scene = make_scene(rng, image_size, split, int(rng.integers(1, 8)), world.object_scale)
    anchor = scene[int(rng.integers(len(scene)))]
    colour = anchor.colour if rng.random() < 0.5 else None
    shape = anchor.shape if rng.random() < 0.8 or colour is None else None
    if rng.random() < 0.15:  # sometimes ask about something absent
        shape = str(rng.choice(SHAPES))
    n = sum(matches(o, shape, colour, None) for o in scene)
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
        image_size = draw_image_size(world.image_size, rng)
        scene = make_scene(rng, image_size, split, 1, world.object_scale)
        if scene:
            break
    obj = scene[0]
    expr = Expression("locate", f"the {obj.colour} {obj.shape}", obj.shape, obj.colour)
    meta = {"kind": "locate", "expression": asdict(expr), "target": 0}
    return ShapesRecord(
        "rec", REC_QUESTION.format(expr.text), json.dumps(list(obj.box)), scene, image_size, meta
    )


def _colour_and_shape(
    scene: list[Obj], target: int, image_size: Size, rng: np.random.Generator
) -> Expression | None:
    """ "the blue square", with the size word when another blue square differs only in size: how
    a click instruction names its target in domain."""
    t = scene[target]
    for size in (None, t.size):
        text = "the " + " ".join(w for w in (size, t.colour, t.shape) if w)
        expr = Expression("attribute", text, t.shape, t.colour, size)
        if resolve(expr, scene, image_size) == [target]:
            return expr
    return None


def _point(rng: np.random.Generator, split: str, world: World) -> ShapesRecord:
    """Click grounding: "Click the blue square." The answer is the object's box (the row's
    solution; a click anywhere inside it is right). Out of domain the target is named by the
    reasoning kinds REC uses there ("Click the leftmost star.")."""
    makers: dict[str, Maker] = (
        {kind: EXPRESSION_MAKERS[kind] for kind in OOD_KINDS}
        if split == "eval_ood"
        else {"attribute": _colour_and_shape}
    )
    image_size, scene, target, expr = _referred(rng, split, world, makers)
    box = list(scene[target].box)
    meta = {"kind": expr.kind, "expression": asdict(expr), "target": target}
    return ShapesRecord("point", f"Click {expr.text}.", json.dumps(box), scene, image_size, meta)


def _named(rng: np.random.Generator, split: str, world: World) -> ShapesRecord:
    """REC on the ``point`` task's scenes: "the purple circle" among 2-5 objects (a size word
    only when needed; out of domain the reasoning kinds, as ``point``). Position alone never
    tells the target here, so a model must read colour and shape from the image to score."""
    record = _point(rng, split, world)
    question = REC_QUESTION.format(record.meta["expression"]["text"])
    return replace(record, task="rec", question=question)


TASK_MAKERS = {
    "rec": _rec,
    "ovd": _ovd,
    "count": _count,
    "locate": _locate,
    "point": _point,
    "rec_mix": _rec_mix,
    "named": _named,
    "rec_negation": _rec_negation,
}


def generate(
    task: str,
    split: str,
    n: int,
    seed: int,
    image_size: tuple[int, int],
    object_scale: float = 1.0,
) -> Iterator[ShapesRecord]:
    """``n`` records of one task and split, deterministic for ``seed``."""
    if task not in TASK_MAKERS:
        raise ShapesSpecError(f"unknown shapes task {task!r}; choose from {TASK_KINDS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    for index in range(n):
        rng = np.random.default_rng([seed, SPLITS.index(split), TASK_KINDS.index(task), index])
        yield TASK_MAKERS[task](rng, split, World(image_size, object_scale))
