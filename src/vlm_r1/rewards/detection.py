"""Detection rewards (OVD): COCO AP / AP50, odLength, and VLM-R1's weighted score.

Only the answer the detection prompt asks for is paid (``strict``, the default): VLM-R1's JSON
list of labelled boxes, ```json-fenced or not, "None", or a family's own box markup
(``parsing.native_boxes``: GLM-4.1V, InternVL). An answer that is anything else
scores 0, as VLM-R1's ``map_reward`` scores an answer whose fenced block ``json.loads``
refuses. The lenient reading (``strict=False``) salvages boxes from broken JSON and free
text; rewarded with it, GRPO in the demo's detection ablation learned to write one intact box
and garbage after it (4 of 6 runs), and was paid for the box.

Explicit edge cases (COCO leaves them undefined):

* no ground truth and an answer that says so ("None", ``[]``) -> 1.0;
* no ground truth and anything else (boxes, no answer, unreadable text) -> 0.0;
* ground truth but no prediction -> 0.0
  (``detection_weighted``, like VLM-R1's ``weighted_sum``, wants the answer "None" itself).

Labels are compared case- and whitespace-insensitively. A prediction without a label (read
leniently, or in a family's box markup; a strict JSON answer labels every box) is given the
ground-truth category when the sample has exactly one; otherwise it matches nothing.

Reward hacking (VLM-R1 paper, sec. 4.3): plain AP barely penalises extra boxes, since
duplicates ranked after the hits do not lower precision at recall levels already reached;
``od_length = AP * min(1, n_gt / n_pred)`` makes every surplus box cost reward.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlm_r1.parsing import extract_answer
from vlm_r1.rewards.common import gt_boxes, normalise_label, predicted_boxes, sample_spaces
from vlm_r1.rewards.detection_math import (
    COCO_IOU_THRESHOLDS,
    Detections,
    coco_ap,
    vlmr1_iou_matrix,
    weighted_detection_score,
)
from vlm_r1.rewards.registry import RewardOutput, register_reward


def _parse_batch(completions, solutions, ctx, require_answer_tag, strict):
    """Per sample: ``Detections``, ``(n_pred, n_gt)`` and its reward details; the last column
    of the counts is 1 where the answer explicitly said there is nothing ("None")."""
    samples, details, counts = [], [], []
    for i, (completion, solution) in enumerate(zip(completions, solutions, strict=True)):
        spaces = sample_spaces(ctx, i)
        parsed, boxes = predicted_boxes(completion, spaces, require_answer_tag, strict)
        gt, gt_labels_raw = gt_boxes(solution, spaces)
        gt_labels = [normalise_label(lab) or "" for lab in gt_labels_raw]
        pred_labels = [normalise_label(b.label) for b in parsed.boxes]
        if len(set(gt_labels)) == 1:
            pred_labels = [lab if lab is not None else gt_labels[0] for lab in pred_labels]
        scores = np.array([b.score for b in parsed.boxes], dtype=np.float64)
        samples.append(
            Detections(boxes, [lab or "\0" for lab in pred_labels], scores, gt, gt_labels)
        )
        counts.append((len(boxes), len(gt), parsed.status == "none"))
        details.append({"status": parsed.status, "n_pred": len(boxes), "n_gt": len(gt)})
    return samples, np.array(counts, dtype=float).reshape(-1, 3), details


def _ap_scores(samples, counts, thresholds) -> np.ndarray:
    ap = coco_ap(samples, thresholds).mean(axis=1)  # NaN where no ground truth
    n_gt, said_none = counts[:, 1], counts[:, 2]
    return np.where(n_gt == 0, said_none, np.nan_to_num(ap))


def _ap_reward(completions, solutions, ctx, thresholds, require_answer_tag, strict):
    samples, counts, details = _parse_batch(completions, solutions, ctx, require_answer_tag, strict)
    scores = _ap_scores(samples, counts, thresholds) if samples else np.zeros(0)
    return RewardOutput([float(s) for s in scores], details)


@register_reward("ap")
def ap(
    completions: list[str],
    solutions: list[Any],
    *,
    require_answer_tag: bool = True,
    strict: bool = True,
    **ctx: Any,
) -> RewardOutput:
    """COCO mAP@[.50:.05:.95] of the answer's boxes (pycocotools ``stats[0]``)."""
    thresholds = COCO_IOU_THRESHOLDS
    return _ap_reward(completions, solutions, ctx, thresholds, require_answer_tag, strict)


@register_reward("ap50")
def ap50(
    completions: list[str],
    solutions: list[Any],
    *,
    require_answer_tag: bool = True,
    strict: bool = True,
    **ctx: Any,
) -> RewardOutput:
    """COCO AP at IoU 0.5 (pycocotools ``stats[1]``)."""
    thresholds = np.array([0.5])
    return _ap_reward(completions, solutions, ctx, thresholds, require_answer_tag, strict)


@register_reward("od_length")
def od_length(
    completions: list[str],
    solutions: list[Any],
    *,
    iou: str = "coco",
    require_answer_tag: bool = True,
    strict: bool = True,
    **ctx: Any,
) -> RewardOutput:
    """VLM-R1's odLength: ``AP * min(1, n_gt / n_pred)`` (``iou``: "coco" mAP or "50" AP50)."""
    if iou not in ("coco", "50"):
        raise ValueError(f"od_length iou must be 'coco' or '50', got {iou!r}")
    thresholds = COCO_IOU_THRESHOLDS if iou == "coco" else np.array([0.5])
    samples, counts, details = _parse_batch(completions, solutions, ctx, require_answer_tag, strict)
    if not samples:
        return RewardOutput([], [])
    base = _ap_scores(samples, counts, thresholds)
    n_pred, n_gt = counts[:, 0], counts[:, 1]
    penalty = np.where(n_pred > 0, np.minimum(1.0, n_gt / np.maximum(n_pred, 1)), 1.0)
    scores = np.where(n_gt == 0, base, base * penalty)
    for d, a, p in zip(details, base, penalty, strict=True):
        d.update(ap=float(a), length_factor=float(p))
    return RewardOutput([float(s) for s in scores], details)


@register_reward("detection_weighted")
def detection_weighted(
    completions: list[str],
    solutions: list[Any],
    *,
    iou_threshold: float = 0.5,
    position_weight: float = 0.7,
    label_weight: float = 0.0,
    completeness_weight: float = 0.3,
    require_answer_tag: bool = True,
    strict: bool = True,
    **ctx: Any,
) -> RewardOutput:
    """VLM-R1's ``weighted_sum`` reward (``detection_score``), in [0, 1].

    ``(0.7 position + 0.0 label + 0.3 completeness) / sum of weights`` (defaults) after greedy
    matching at IoU >= 0.5 (VLM-R1's): position = IoU summed over matches whose labels agree / #gt,
    label = agreeing matches / #gt, completeness = 1 - (miss rate + false-alarm rate) / 2; a
    label-mismatched match uses up both boxes with IoU 0. The formula, its IoU (slivers of one
    unit or less do not overlap) and its edge cases are in ``detection_math``
    (``weighted_detection_score``, ``vlmr1_iou_matrix``). No ground truth: 1 only for an
    answer that reads "None" (VLM-R1: ``clean_text(answer) == "none"``), else 0.

    Same score as VLM-R1 given the same boxes; the inputs differ where VLM-R1 is stricter or
    undefined: the JSON list may come without its ```json fence (``strict``, the default; an
    answer that is not that list scores 0, as in VLM-R1), boxes are mapped to original-image
    pixels, the frame the 1-unit overlap rule is applied in; labels compare case- and
    whitespace-insensitively (VLM-R1: lower-cased); with ``strict=False`` boxes come from the
    lenient parser and an unlabelled box takes the single ground-truth category (VLM-R1
    raises on it), else matches no label; with ``require_answer_tag`` (default) an answer
    needs its ``<answer>`` tag.
    """
    weights = (position_weight, label_weight, completeness_weight)
    samples, counts, details = _parse_batch(completions, solutions, ctx, require_answer_tag, strict)
    scores = []
    for i, (s, (_, n_gt, _), d) in enumerate(zip(samples, counts, details, strict=True)):
        if n_gt == 0:  # VLM-R1's "None" solution
            answer = extract_answer(completions[i], require_answer_tag).answer
            says_none = answer is not None and answer.strip().rstrip(".").lower() == "none"
            scores.append(1.0 if says_none else 0.0)
            continue
        ious = vlmr1_iou_matrix(s.pred_boxes, s.gt_boxes)
        same_label = np.array(
            [[p == g for g in s.gt_labels] for p in s.pred_labels], dtype=bool
        ).reshape(ious.shape)
        result = weighted_detection_score(ious, same_label, iou_threshold, weights)
        d.update(
            matched=result.matched,
            position=result.position,
            label=result.label,
            completeness=result.completeness,
        )
        scores.append(result.score)
    return RewardOutput(scores, details)
