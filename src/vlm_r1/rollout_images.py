"""A rollout row as a picture: its first image, enlarged without blur when it is small, with the
ground-truth boxes in green and the completion's boxes in red, in image pixels.

One drawing for both readers of rollouts: the HTML report (``report.html``) and the trackers'
rollout tables (``tracking``). Enlarging is by a whole factor with nearest-neighbour sampling, so
a 112-pixel training image shown at 336 pixels keeps every source pixel a sharp block, and the
boxes are drawn at the enlarged size rather than blurred up with the image.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

#: The report enlarges rollout images narrower than this (by a whole factor) to at least it.
MIN_ROLLOUT_WIDTH = 256
#: At most this many predicted boxes are drawn (a flooding completion would hide the image).
MAX_DRAWN_BOXES = 50
TRUTH_COLOUR = (0, 170, 0)
PREDICTED_COLOUR = (220, 0, 0)


def rollout_boxes(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(ground truth, predicted)`` boxes of a rollout row's first image (the one drawn),
    each ``[N, 4]`` in its pixels: the completion's boxes are mapped back from the model's
    coordinate system with the row's ``box_space``; an unusable ``box_space`` leaves them as
    written. Boxes that name another image (``"image": k``, k > 1) are left out."""
    # Imported here: the reward registry loads every reward module, which a plain metrics
    # writer (and ``vlm-r1 report``) does not need until a rollout is drawn.
    from vlm_r1.models.boxes import BoxSpace, from_model
    from vlm_r1.parsing import extract_answer, parse_boxes
    from vlm_r1.rewards.common import solution_boxes

    truth, _, numbers = solution_boxes(row.get("solution") or "")
    truth = truth[[n in (None, 1) for n in numbers]] if len(truth) else truth
    written = parse_boxes(extract_answer(row.get("completion") or "").answer).boxes
    written = [b for b in written if b.image in (None, 1)]
    predicted = np.array([b.box for b in written], dtype=np.float64).reshape(-1, 4)
    space = row.get("box_space")
    if len(predicted) and isinstance(space, dict):
        try:
            model_size = space.get("model_size")
            box_space = BoxSpace(
                space["system"],
                tuple(space["original_size"]),
                tuple(model_size) if model_size else None,
            )
        except (KeyError, TypeError, ValueError) as err:
            logger.warning(
                "rollout %s: box_space %r unusable (%s)", row.get("sample_id"), space, err
            )
        else:
            predicted = from_model(predicted, box_space)
    return np.asarray(truth, dtype=np.float64).reshape(-1, 4), predicted


def upscale_factor(width: int, min_width: int = MIN_ROLLOUT_WIDTH) -> int:
    """The smallest whole factor that makes ``width`` at least ``min_width`` (1 if it already
    is). Whole factors keep every source pixel an exact square block; the result stays below
    ``2 * min_width`` for any image that needed enlarging."""
    return max(1, math.ceil(min_width / max(width, 1)))


def upscale_nearest(
    image: Image.Image, min_width: int = MIN_ROLLOUT_WIDTH
) -> tuple[Image.Image, int]:
    """``image`` enlarged by ``upscale_factor`` with nearest-neighbour sampling (no blur: each
    pixel becomes a ``factor x factor`` block of its own colour), and the factor."""
    factor = upscale_factor(image.width, min_width)
    if factor == 1:
        return image, 1
    size = (image.width * factor, image.height * factor)
    return image.resize(size, Image.Resampling.NEAREST), factor


def _rectangle(box: Any, factor: int) -> list[float]:
    """A box in source pixels as PIL rectangle corners at the enlarged size (corners sorted)."""
    x1, y1, x2, y2 = (float(v) * factor for v in box)
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


def draw_rollout(row: dict[str, Any], min_width: int = MIN_ROLLOUT_WIDTH) -> Image.Image | None:
    """The row's first image, enlarged to at least ``min_width`` pixels (``upscale_nearest``;
    1 keeps its size), with the ground truth (green) and predicted (red) boxes drawn at that
    size; None when the row has no image or it cannot be read."""
    images = row.get("images") or []
    if not images:
        return None
    try:
        with Image.open(images[0]) as source:
            image, factor = upscale_nearest(source.convert("RGB"), min_width)
    except OSError as err:
        logger.warning(
            "rollout %s: cannot read image %s (%s)", row.get("sample_id"), images[0], err
        )
        return None
    truth, predicted = rollout_boxes(row)
    draw = ImageDraw.Draw(image)
    for boxes, colour in ((truth, TRUTH_COLOUR), (predicted[:MAX_DRAWN_BOXES], PREDICTED_COLOUR)):
        for box in boxes.tolist():
            draw.rectangle(_rectangle(box, factor), outline=colour, width=2)
    return image
