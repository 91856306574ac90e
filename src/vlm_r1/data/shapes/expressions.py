"""Referring expressions as data, and ``resolve``: which objects of a scene one refers to.

The generator only emits an expression that ``resolve`` maps to exactly its target, and tests
re-check it, so the meaning of every expression kind lives here in one place. Superlatives and
ordinals need a margin between candidates, relations a clear separation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vlm_r1.data.shapes.world import Obj


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


def matches(obj: Obj, shape: str | None, colour: str | None, size: str | None) -> bool:
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
    cands = [(i, o) for i, o in enumerate(scene) if matches(o, expr.shape, expr.colour, expr.size)]
    if expr.kind in ("attribute", "locate"):
        return [i for i, _ in cands]
    if expr.kind == "relation":
        anchors = [o for o in scene if matches(o, **expr.anchor)]  # type: ignore[arg-type]
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
