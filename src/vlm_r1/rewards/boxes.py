"""REC rewards: IoU of the predicted box with the referred object's box.

The first box of the answer is compared with the first ground-truth box, in original-image
pixels (predictions are mapped from the model's coordinate system with each image's space,
``ctx["image_box_spaces"]``; in a multi-image row a box in the wrong image has IoU 0).
A missing ``<answer>`` or an unreadable box scores 0, as in VLM-R1's ``iou_reward``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlm_r1.rewards.box_math import paired_iou
from vlm_r1.rewards.common import gt_boxes, predicted_boxes, sample_spaces
from vlm_r1.rewards.registry import RewardOutput, register_reward


def _rec_ious(completions, solutions, ctx, inclusive, require_answer_tag):
    preds, gts, details = np.zeros((len(completions), 4)), np.zeros((len(completions), 4)), []
    usable = np.zeros(len(completions), dtype=bool)
    for i, (completion, solution) in enumerate(zip(completions, solutions, strict=True)):
        spaces = sample_spaces(ctx, i)
        parsed, boxes = predicted_boxes(completion, spaces, require_answer_tag)
        gt, _ = gt_boxes(solution, spaces)
        details.append({"status": parsed.status, "n_pred": len(boxes)})
        if len(boxes) and len(gt):
            preds[i], gts[i], usable[i] = boxes[0], gt[0], True
    ious = np.where(usable, paired_iou(preds, gts, inclusive), 0.0)
    for d, iou in zip(details, ious, strict=True):
        d["iou"] = float(iou)
    return ious, details


@register_reward("rec_iou")
def rec_iou(
    completions: list[str],
    solutions: list[Any],
    *,
    inclusive: bool = False,
    require_answer_tag: bool = True,
    **ctx: Any,
) -> RewardOutput:
    """Continuous IoU in [0, 1]; ``inclusive`` uses VLM-R1's +1-pixel widths."""
    ious, details = _rec_ious(completions, solutions, ctx, inclusive, require_answer_tag)
    return RewardOutput([float(x) for x in ious], details)


@register_reward("rec_acc")
def rec_acc(
    completions: list[str],
    solutions: list[Any],
    *,
    threshold: float = 0.5,
    strict: bool = False,
    inclusive: bool = False,
    require_answer_tag: bool = True,
    **ctx: Any,
) -> RewardOutput:
    """1 if IoU >= ``threshold`` (``strict``: >, the VLM-R1 eval convention), else 0."""
    ious, details = _rec_ious(completions, solutions, ctx, inclusive, require_answer_tag)
    hits = ious > threshold if strict else ious >= threshold
    return RewardOutput([float(h) for h in hits], details)
