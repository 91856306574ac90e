"""Helpers shared by reward modules: per-sample context, answer text, ground-truth boxes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlm_r1.models.boxes import BoxSpace, from_model
from vlm_r1.parsing import (
    BoxesParse,
    ParsedBox,
    boxes_from_json,
    extract_answer,
    parse_boxes,
    solution_text,
)


def ctx_item(ctx: dict[str, Any], key: str, index: int, default: Any = None) -> Any:
    """``ctx[key][index]`` when the context carries that per-sample list, else ``default``."""
    values = ctx.get(key)
    if values is None or isinstance(values, (str, bytes)):
        return default if values is None else values
    try:
        return values[index]
    except (IndexError, TypeError, KeyError):
        return default


def answer_texts(completions: Sequence[str], require_tag: bool) -> list[str | None]:
    return [extract_answer(c, require_tag).answer for c in completions]


def predicted_boxes(
    completion: str, space: BoxSpace | None, require_tag: bool = True
) -> tuple[BoxesParse, np.ndarray]:
    """Parse a completion's boxes and map them to original-image pixels -> ``(parse, [P, 4])``."""
    parsed = parse_boxes(extract_answer(completion, require_tag).answer)
    coords = np.array([b.box for b in parsed.boxes], dtype=np.float64).reshape(-1, 4)
    if space is not None and len(coords):
        coords = from_model(coords, space)
    return parsed, coords


def gt_boxes(solution: Any) -> tuple[np.ndarray, list[str | None]]:
    """Ground-truth boxes (original pixels) and labels from any solution form we accept:
    a ``BoxSolution``, ``{"boxes": [...], "labels": [...]}``, a list of ``{"bbox_2d", "label"}`` dicts, one
    ``[x1, y1, x2, y2]``, a list of them, or text in VLM-R1's JSON answer format."""
    if isinstance(solution, dict) and "boxes" in solution:
        boxes = np.asarray(solution["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = list(solution.get("labels") or [None] * len(boxes))
        return boxes, labels
    if hasattr(solution, "boxes") and hasattr(solution, "labels"):  # data.sample.BoxSolution
        return np.asarray(solution.boxes, dtype=np.float64).reshape(-1, 4), list(solution.labels)
    if isinstance(solution, str):
        parsed = parse_boxes(solution_text(solution))
        items: list[ParsedBox] = parsed.boxes
    else:
        found: list[ParsedBox] = []
        boxes_from_json(solution, found)
        items = found
    boxes = np.array([b.box for b in items], dtype=np.float64).reshape(-1, 4)
    return boxes, [b.label for b in items]


def normalise_label(label: str | None) -> str | None:
    """Case- and whitespace-insensitive label (cached: a batch repeats a few category names)."""
    return _normalise(label) if isinstance(label, str) else None


@functools.lru_cache(maxsize=8192)
def _normalise(label: str) -> str:
    return " ".join(label.lower().split())
