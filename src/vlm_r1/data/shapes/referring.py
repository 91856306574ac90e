"""Making a referring expression for a target object, one maker per expression kind.

In-domain kinds (attribute, relation) are RefCOCO-like; the out-of-domain kinds (superlative,
ordinal, negation) need reasoning and never appear in ``train``. Each maker returns an
expression that picks out exactly the target, or ``None`` when its kind cannot.
"""

from __future__ import annotations

import numpy as np

from vlm_r1.data.shapes.expressions import Expression, matches, resolve
from vlm_r1.data.shapes.world import Obj, Size

IN_DOMAIN_KINDS = ("attribute", "relation")
OOD_KINDS = ("superlative", "ordinal", "negation")


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
                if sum(matches(o, shape, colour, None) for o in scene) > 1:
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


EXPRESSION_MAKERS = {
    "attribute": _attribute,
    "relation": _relation,
    "superlative": _superlative,
    "ordinal": _ordinal,
    "negation": _negation,
}
