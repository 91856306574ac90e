"""A custom reward that looks at the image: is the predicted box on an object?

Rule-based box rewards compare a box with the ground truth; this one also asks the picture. It
opens the sample's image, takes the first box of the answer, maps it from the model's
coordinate system to original-image pixels (the model's box space, from the reward context),
and scores the share of the box's pixels that differ from the background (estimated as the
median colour of the image's outer border). A box on empty background scores 0, a box inside
an object 1. On its own that favours tiny boxes inside any object, so use it beside an IoU
reward, as a shaping term::

    rewards:
      - {name: accuracy, weight: 1.0, params: {method: rec_iou}}
      - {name: format, weight: 0.5}
      - name: examples/rewards/box_on_object.py:box_on_object
        weight: 0.2
        params: {tolerance: 24, min_box_pixels: 4}

The path is relative to the directory training starts in. What the reward receives
(``image_paths``, ``box_spaces`` and the rest) is listed in ``vlm_r1.rl.scoring.reward_context``.
The parameters without a default (``image_paths``, ``box_spaces``) are filled from that context;
the ones with a default are settings, set only by the config's ``params``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from vlm_r1.rewards import RewardOutput
from vlm_r1.rewards.common import predicted_boxes


def background_colour(pixels: np.ndarray) -> np.ndarray:
    """The median RGB of the outer one-pixel border of ``[H, W, 3]`` pixels."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def object_fraction(pixels: np.ndarray, box: np.ndarray, tolerance: float) -> tuple[float, int]:
    """Share of the pixels inside ``box`` (original pixels ``[x1, y1, x2, y2]``) whose colour
    differs from the background by more than ``tolerance`` in some channel, and the box's
    pixel count (a box that covers no whole pixel has 0)."""
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    x2, y2 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    region = pixels[y1:y2, x1:x2]
    if region.size == 0:
        return 0.0, 0
    differs = np.abs(region - background_colour(pixels)).max(axis=-1) > tolerance
    return float(differs.mean()), int(differs.size)


def box_on_object(
    completions: list[str],
    solutions: list[Any],
    *,
    image_paths: list[list[str]],
    box_spaces: list[Any],
    tolerance: float = 24.0,
    min_box_pixels: int = 4,
    require_answer_tag: bool = True,
    **kwargs: Any,
) -> RewardOutput:
    """Per completion: the object share of its first box's pixels (0 without an image, a box,
    or with a box of fewer than ``min_box_pixels`` pixels). Each image is opened once per call
    (a group's completions share it) and only if some completion of its sample has a box."""
    images: dict[str, np.ndarray] = {}
    scores, details = [], []
    for completion, paths, space in zip(completions, image_paths, box_spaces, strict=True):
        parsed, boxes = predicted_boxes(completion, space, require_answer_tag)
        if not paths or space is None or not len(boxes):
            scores.append(0.0)
            details.append({"status": parsed.status if paths else "no image"})
            continue
        if paths[0] not in images:
            with Image.open(paths[0]) as image:
                images[paths[0]] = np.asarray(image.convert("RGB"), dtype=np.int16)
        fraction, count = object_fraction(images[paths[0]], boxes[0], tolerance)
        score = fraction if count >= min_box_pixels else 0.0
        scores.append(score)
        details.append({"status": parsed.status, "box_pixels": count, "object_share": fraction})
    return RewardOutput(scores, details)
