"""Point (click) grounding rewards: does the answered point fall inside the target's box?

GUI grounding data (ScreenSpot-style, as EasyR1 and VLM-R1 train it) asks for a click: the
ground truth is the target's box ``[x1, y1, x2, y2]`` in original-image pixels, and the model
answers one point ``[x, y]`` in its family's coordinate system (``ctx["box_spaces"]``:
Qwen2.5-VL absolute pixels of the resized input, Qwen2-VL/Qwen3-VL/InternVL 0-1000), which is
mapped back to original pixels here. It is not clamped to the image: a point written outside
the image must not be pulled onto an edge where a box touching that edge would contain it.

* ``point_in_box``: 1 if the point lies inside the (first) ground-truth box, edges included.
* ``point_distance`` (shaping): ``max(0, 1 - d / (radius * D))``, where ``d`` is the Euclidean
  distance in original pixels from the point to the box (0 on or inside it, so the score is 1
  there) and ``D`` the image diagonal. With ``radius = 1`` (the default) the score falls
  linearly from 1 at the box to 0 one image diagonal away, so every point in the image earns a
  signal that grows toward the target.

A missing ``<answer>``, an answer without a point, or a solution without a box scores 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vlm_r1.models.boxes import BoxSpace, points_from_model
from vlm_r1.parsing import PointParse, extract_answer, parse_point
from vlm_r1.rewards.common import ctx_item, gt_boxes
from vlm_r1.rewards.registry import RewardConfigError, RewardOutput, register_reward

#: Slack on the box edges, in original pixels: absorbs the float round-off of mapping a point
#: written exactly on a model-space edge back to pixels, and nothing more.
EDGE_TOLERANCE = 1e-6


def predicted_point(
    completion: str, space: BoxSpace | None, require_tag: bool = True
) -> tuple[PointParse, np.ndarray | None]:
    """Parse a completion's point and map it to original-image pixels (unclamped) ->
    ``(parse, [x, y] or None)``; without a box space the point is taken as pixels."""
    parsed = parse_point(extract_answer(completion, require_tag).answer)
    if parsed.point is None:
        return parsed, None
    point = np.array([parsed.point], dtype=np.float64)
    if space is not None:
        point = points_from_model(point, space, clamp=False)
    return parsed, point[0]


def point_box_distance(points: Any, boxes: Any) -> np.ndarray:
    """Euclidean distance ``[N]`` from each point ``[N, 2]`` to its box ``[N, 4]`` (xyxy): 0 on
    or inside the box, else the distance to its nearest edge or corner."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    with np.errstate(over="ignore", invalid="ignore"):
        dx = np.maximum(np.maximum(b[:, 0] - p[:, 0], p[:, 0] - b[:, 2]), 0.0)
        dy = np.maximum(np.maximum(b[:, 1] - p[:, 1], p[:, 1] - b[:, 3]), 0.0)
        return np.hypot(dx, dy)


def inside_box(distance: np.ndarray | float) -> np.ndarray:
    """Inside (edges included) from ``point_box_distance``, with ``EDGE_TOLERANCE`` slack."""
    return np.asarray(distance) <= EDGE_TOLERANCE


def image_diagonal(image_size: tuple[int, int] | None) -> float | None:
    """``sqrt(width^2 + height^2)`` in pixels, or None without a usable size."""
    if image_size is None:
        return None
    w, h = image_size
    diagonal = math.hypot(float(w), float(h))
    return diagonal if math.isfinite(diagonal) and diagonal > 0 else None


def _image_size(ctx: dict[str, Any], i: int, space: BoxSpace | None) -> tuple[int, int] | None:
    if space is not None:
        return space.original_size
    size = ctx_item(ctx, "image_sizes", i)
    return tuple(size) if isinstance(size, (list, tuple)) and len(size) == 2 else None


def _clicks(
    completions: list[str], solutions: list[Any], ctx: dict[str, Any], require_answer_tag: bool
) -> tuple[np.ndarray, list[float | None], list[dict[str, Any]]]:
    """Per completion: the distance to the first gt box (``inf`` without a point or a box),
    the image diagonal (None if unknown), and the details a rollout log shows."""
    distances = np.full(len(completions), np.inf)
    diagonals: list[float | None] = []
    details: list[dict[str, Any]] = []
    for i, (completion, solution) in enumerate(zip(completions, solutions, strict=True)):
        space = ctx_item(ctx, "box_spaces", i)
        space = space if isinstance(space, BoxSpace) else None
        parsed, point = predicted_point(completion, space, require_answer_tag)
        gt, _ = gt_boxes(solution)
        if point is not None and len(gt):
            distances[i] = point_box_distance(point, gt[0])[0]
        diagonals.append(image_diagonal(_image_size(ctx, i, space)))
        details.append(
            {
                "status": parsed.status,
                "point": None if point is None else [float(v) for v in point],
                "inside": bool(inside_box(distances[i])),
            }
        )
    return distances, diagonals, details


@register_reward("point_in_box")
def point_in_box(
    completions: list[str],
    solutions: list[Any],
    *,
    require_answer_tag: bool = True,
    **ctx: Any,
) -> RewardOutput:
    """1 if the answered point lies inside the target's box (edges included), else 0."""
    distances, _, details = _clicks(completions, solutions, ctx, require_answer_tag)
    return RewardOutput([float(x) for x in inside_box(distances)], details)


@register_reward("point_distance")
def point_distance(
    completions: list[str],
    solutions: list[Any],
    *,
    radius: float = 1.0,
    require_answer_tag: bool = True,
    **ctx: Any,
) -> RewardOutput:
    """Shaping: ``max(0, 1 - d / (radius * image diagonal))``; 1 inside the box, 0 without a
    point. Without an image size (no image) it is ``point_in_box``."""
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise RewardConfigError(
            f"reward point_distance: radius={radius!r} must be a positive number (the fraction "
            "of the image diagonal at which the score reaches 0)"
        )
    distances, diagonals, details = _clicks(completions, solutions, ctx, require_answer_tag)
    scores = []
    for distance, diagonal, detail in zip(distances, diagonals, details, strict=True):
        if inside_box(distance):
            score = 1.0
        elif diagonal is None or not math.isfinite(distance):
            score = 0.0
        else:
            score = max(0.0, 1.0 - float(distance) / (radius * diagonal))
        detail["distance"] = float(distance) if math.isfinite(distance) else None
        scores.append(score)
    return RewardOutput(scores, details)
