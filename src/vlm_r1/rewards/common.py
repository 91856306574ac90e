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


#: One image's box space, every image's (in prompt order), or none (a text-only sample).
Spaces = BoxSpace | Sequence[BoxSpace] | None


def as_spaces(spaces: Spaces) -> tuple[BoxSpace, ...]:
    if spaces is None:
        return ()
    return (spaces,) if isinstance(spaces, BoxSpace) else tuple(spaces)


def sample_spaces(ctx: dict[str, Any], index: int) -> tuple[BoxSpace, ...]:
    """Every image's box space for sample ``index`` of a reward context: ``image_box_spaces``
    when the context has it, else the first image's ``box_spaces`` entry."""
    spaces = ctx_item(ctx, "image_box_spaces", index)
    return as_spaces(spaces if spaces is not None else ctx_item(ctx, "box_spaces", index))


# ------------------------------------------------------------------ multi-image boxes
# A box is only comparable with boxes of its own image. Rewards and metrics compare boxes of
# one sample by IoU, so a sample's images are laid side by side on one "canvas": image k is
# shifted right by the widths of the images before it, with a gap of its own width between
# images (so ground-truth boxes that overhang their image a little still cannot meet another
# image's). Boxes of different images then never overlap, and boxes of the same image keep
# their IoU (it is translation invariant), so every single-image reward and metric (IoU,
# COCO AP, odLength) applies unchanged. A box naming an image the sample does not have goes to
# the "void" right of the last image: it still counts as an answer but matches nothing.
# Image 1 is never shifted, so a single-image sample's boxes are exactly its pixels.


def canvas_offsets(spaces: Sequence[BoxSpace]) -> np.ndarray:
    """The x offset of each image on the canvas, then the void's: ``[len(spaces) + 1]``."""
    widths = np.array([s.original_size[0] for s in spaces], dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(2.0 * widths)])


def image_slots(numbers: Sequence[int | None], num_images: int) -> np.ndarray:
    """0-based canvas slot per box: image ``k`` (1-based, ``None`` = 1) -> ``k - 1``; a
    number outside ``1..num_images`` -> ``num_images`` (the void)."""
    slots = np.array([1 if n is None else n for n in numbers], dtype=np.int64) - 1
    return np.where((slots >= 0) & (slots < num_images), slots, num_images)


def place_on_canvas(
    pixels: np.ndarray, numbers: Sequence[int | None], spaces: Sequence[BoxSpace]
) -> np.ndarray:
    """Per-image pixel boxes ``[N, 4]`` -> canvas boxes (x shifted by each box's image)."""
    shift = canvas_offsets(spaces)[image_slots(numbers, len(spaces))]
    out = np.array(pixels, dtype=np.float64).reshape(-1, 4)
    out[:, 0] += shift
    out[:, 2] += shift
    return out


def box_numbers(parsed: BoxesParse) -> list[int | None]:
    return [b.image for b in parsed.boxes]


def model_boxes_to_pixels(
    coords: np.ndarray, numbers: Sequence[int | None], spaces: Sequence[BoxSpace]
) -> np.ndarray:
    """Model-coordinate boxes -> pixels of each box's own image (clamped to it); a box naming
    no image of the sample is mapped with image 1's space."""
    if len(spaces) == 1:
        return from_model(coords, spaces[0])
    slots = image_slots(numbers, len(spaces))
    slots[slots == len(spaces)] = 0
    pixels = np.empty_like(coords)
    for slot, space in enumerate(spaces):
        rows = slots == slot
        if rows.any():
            pixels[rows] = from_model(coords[rows], space)
    return pixels


def predicted_boxes(
    completion: str, spaces: Spaces, require_tag: bool = True, strict: bool = False
) -> tuple[BoxesParse, np.ndarray]:
    """Parse a completion's boxes and map them to original-image pixels -> ``(parse, [P, 4])``.

    ``spaces`` is the sample's box space, or every image's in prompt order: each box is mapped
    with the space of the image it names (``"image": k``) and placed on the sample's canvas
    (see above; for one image and boxes that name no other, the pixels themselves).
    ``strict``: read only a well-formed answer (``parsing.parse_boxes``)."""
    parsed = parse_boxes(extract_answer(completion, require_tag).answer, strict)
    coords = np.array([b.box for b in parsed.boxes], dtype=np.float64).reshape(-1, 4)
    spaces = as_spaces(spaces)
    if not spaces or not len(coords):
        return parsed, coords
    numbers = box_numbers(parsed)
    pixels = model_boxes_to_pixels(coords, numbers, spaces)
    if len(spaces) == 1 and all(n in (None, 1) for n in numbers):
        return parsed, pixels
    return parsed, place_on_canvas(pixels, numbers, spaces)


def gt_boxes(solution: Any, spaces: Spaces = None) -> tuple[np.ndarray, list[str | None]]:
    """Ground-truth boxes (original pixels) and labels from any solution form we accept:
    a ``BoxSolution``, ``{"boxes": [...], "labels": [...], "images": [...]}``, a list of
    ``{"bbox_2d", "label", "image"}`` dicts, one ``[x1, y1, x2, y2]``, a list of them, or text
    in VLM-R1's JSON answer format. With the sample's image ``spaces`` (only their sizes are
    read), boxes that name an image are placed on the canvas as ``predicted_boxes`` places
    the answer's."""
    boxes, labels, numbers = solution_boxes(solution)
    spaces = as_spaces(spaces)
    if spaces and any(n not in (None, 1) for n in numbers):
        missing = sorted({n for n in numbers if n is not None and not 1 <= n <= len(spaces)})
        if missing:  # data checks numbers against the row's images: the caller lacks spaces
            raise ValueError(
                f"the solution names image(s) {missing} but only {len(spaces)} image space(s) "
                "were given; pass every image's space (the reward context's image_box_spaces)"
            )
        boxes = place_on_canvas(boxes, numbers, spaces)
    return boxes, labels


def solution_boxes(solution: Any) -> tuple[np.ndarray, list[str | None], list[int | None]]:
    """A solution's boxes in their own images' pixels, labels, and image numbers (``None``
    where not said, i.e. image 1)."""
    if isinstance(solution, dict) and "boxes" in solution:
        boxes = np.asarray(solution["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = list(solution.get("labels") or [None] * len(boxes))
        return boxes, labels, list(solution.get("images") or [None] * len(boxes))
    if hasattr(solution, "boxes") and hasattr(solution, "labels"):  # data.sample.BoxSolution
        boxes = np.asarray(solution.boxes, dtype=np.float64).reshape(-1, 4)
        numbers = getattr(solution, "images", ()) or [None] * len(boxes)
        return boxes, list(solution.labels), list(numbers)
    if isinstance(solution, str):
        items: list[ParsedBox] = parse_boxes(solution_text(solution)).boxes
    else:
        items = []
        boxes_from_json(solution, items)
    boxes = np.array([b.box for b in items], dtype=np.float64).reshape(-1, 4)
    return boxes, [b.label for b in items], [b.image for b in items]


def normalise_label(label: str | None) -> str | None:
    """Case- and whitespace-insensitive label (cached: a batch repeats a few category names)."""
    return _normalise(label) if isinstance(label, str) else None


@functools.lru_cache(maxsize=8192)
def _normalise(label: str) -> str:
    return " ".join(label.lower().split())
