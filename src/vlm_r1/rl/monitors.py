"""Reward-hacking, "aha" and reward-diagnostic signals over a batch of completions.

Hacking (VLM-R1 paper, sec. 4.3): detection rewards are gamed with empty answers, one box
covering the whole image, or floods of (duplicate) boxes. Aha (sec. 4.4): during RL the model
starts re-checking candidates in its thinking. Diagnostics answer the question VLM-R1 users ask
most: "format reward is 1, why is the IoU reward 0?" -- no answer tag, an unparsable answer, a
box outside the image (usually a coordinate-system mismatch), or a real miss. The share of
detection answers that are well formed (the JSON the prompt asks for, what the strict
detection rewards pay for) falls when a policy learns to write one box and garbage after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlm_r1.models.boxes import BoxSpace
from vlm_r1.parsing import extract_answer, is_well_formed_boxes, parse_boxes
from vlm_r1.rewards.box_math import iou_matrix
from vlm_r1.rewards.common import gt_boxes
from vlm_r1.rewards.format import is_strict_format

RECHECK_PHRASES = (
    "wait",
    "let me check",
    "check again",
    "double-check",
    "double check",
    "re-check",
    "recheck",
    "look again",
    "verify",
    "actually",
    "on second thought",
)
WHOLE_IMAGE_IOU = 0.9
DUPLICATE_IOU = 0.9
#: Below this spread of the true box centres (image-relative units: 0.05 is 5% of the image)
#: the batch's targets all sit in about one place, and ``centre_spread_ratio`` is undefined.
#: Dividing by such a spread turned sampling noise into ratios in the tens of thousands.
MIN_TRUE_SPREAD = 0.05


def centre_spread_ratio(predicted: np.ndarray, truth: np.ndarray) -> float:
    """How much predicted box centres vary across images, relative to the true centres.

    ``predicted`` and ``truth`` are ``[n, 2]`` centres in image-relative units (0..1), one pair
    per REC sample. 1 means the answers move with the images like the truth does; towards 0
    the model answers one box for every image. That is the hedge a continuous IoU reward pays
    for while grounding is weak (a central, typical box earns a fair IoU on average), and it
    raises mean IoU without raising Acc@0.5, so the reward curve alone cannot show it.

    Undefined (NaN) with fewer than two samples or a true spread below ``MIN_TRUE_SPREAD``: a
    near-constant target says nothing about whether answers follow the images, and a
    denominator near 0 makes any predicted spread look enormous. Predicted centres are clipped
    to the image first: a centre outside it is a coordinate-system error (counted by
    ``monitor/why0/outside_image``), not a position, and unclipped one such box could make the
    ratio arbitrarily large. So a defined ratio is at most ``sqrt(0.5) / MIN_TRUE_SPREAD``.
    """
    if len(truth) < 2:
        return float("nan")
    truth_spread = float(np.linalg.norm(truth.std(axis=0)))
    if not truth_spread >= MIN_TRUE_SPREAD:  # also catches NaN
        return float("nan")
    inside = np.clip(predicted, 0.0, 1.0)
    return float(np.linalg.norm(inside.std(axis=0))) / truth_spread


def _rate(count: float, total: int) -> float:
    """``count / total``, undefined (NaN) when nothing was counted over (``total == 0``): an
    empty denominator is "no data", not a rate of 0."""
    return count / total if total else float("nan")


def completion_monitors(
    texts: Sequence[str],
    solutions: Sequence[Any],
    tasks: Sequence[str],
    spaces: Sequence[BoxSpace | None],
    recheck_phrases: Sequence[str] = RECHECK_PHRASES,
) -> dict[str, float]:
    """Rates over the batch (each in [0, 1] except lengths and the count ratio)."""
    counts = {
        "empty_answer": 0,
        "whole_image_box": 0,
        "duplicate_boxes": 0,
        "recheck": 0,
        "why0/no_answer": 0,
        "why0/unparsable": 0,
        "why0/outside_image": 0,
        "why0/iou_zero": 0,
    }
    think_words, box_ratios, n_boxes, n_box_samples = [], [], 0, 0
    n_detection, n_well_formed = 0, 0
    predicted_centres, true_centres = [], []
    lowered = [p.lower() for p in recheck_phrases]
    for text, solution, task, space in zip(texts, solutions, tasks, spaces, strict=True):
        parsed = extract_answer(text)
        think = (parsed.think or "").lower()
        think_words.append(len(think.split()))
        counts["recheck"] += any(p in think for p in lowered)
        if (
            parsed.answer is None
            or not parsed.answer.strip()
            or parsed.answer.strip().lower() == "none"
        ):
            counts["empty_answer"] += 1
        if task not in ("rec", "ovd"):
            continue
        if task == "ovd":
            n_detection += 1
            n_well_formed += is_well_formed_boxes(parsed.answer)
        n_box_samples += 1
        boxes = parse_boxes(parsed.answer)
        pred = np.array([b.box for b in boxes.boxes], dtype=float).reshape(-1, 4)
        gt, _ = gt_boxes(solution)
        if len(gt):  # no true box (an OVD image without the category): no ratio to take
            box_ratios.append(len(pred) / len(gt))
        n_boxes += len(pred)
        if parsed.answer is None:
            counts["why0/no_answer"] += 1
            continue
        if not len(pred):
            counts["why0/unparsable"] += boxes.status not in ("none",)
            continue
        if space is not None:
            extent = np.array(space.extent())
            outside = (pred[:, :2] < -1e-6).any() or (pred[:, 2:] > extent + 1e-6).any()
            counts["why0/outside_image"] += bool(outside)
            pixels = np.asarray(pred) / np.array([*space.scale(), *space.scale()])
            full = np.array([[0.0, 0.0, *space.original_size]])
            counts["whole_image_box"] += bool((iou_matrix(pixels, full) > WHOLE_IMAGE_IOU).any())
            if len(gt) and not (iou_matrix(pixels, gt) > 0).any():
                counts["why0/iou_zero"] += 1
            if task == "rec" and len(gt):
                size = np.array(space.original_size, dtype=float)
                predicted_centres.append((pixels[0, :2] + pixels[0, 2:]) / 2 / size)
                true_centres.append((gt[0, :2] + gt[0, 2:]) / 2 / size)
        if len(pred) > 1:
            pairwise = np.triu(iou_matrix(pred, pred), k=1)
            counts["duplicate_boxes"] += int((pairwise > DUPLICATE_IOU).any(axis=0).sum())
    n = max(len(texts), 1)
    # Shares of the box samples: undefined, like the box signals below, without any.
    out = {
        f"monitor/{k}": _rate(v, n_box_samples) for k, v in counts.items() if k.startswith("why0")
    }
    out.update(
        {
            "monitor/format_pass": float(np.mean([is_strict_format(t) for t in texts]))
            if texts
            else 0.0,
            "monitor/empty_answer_rate": counts["empty_answer"] / n,
            "monitor/recheck_rate": counts["recheck"] / n,
            "monitor/think_words": float(np.mean(think_words)) if think_words else 0.0,
        }
    )
    # Box signals are undefined (NaN) for a batch without box tasks; the keys are always there
    # so every process reduces the same metrics (Engine.metrics_mean_over_ranks skips NaN).
    nan = float("nan")
    out.update(
        {
            "monitor/whole_image_box_rate": _rate(counts["whole_image_box"], n_box_samples),
            "monitor/well_formed_answer_rate": _rate(n_well_formed, n_detection),
            "monitor/pred_gt_box_ratio": float(np.mean(box_ratios)) if box_ratios else nan,
            # No predicted box means no duplicate: 0 (a rate over boxes, but "none repeated"
            # is the true reading, and it keeps the metric defined on a batch of empty answers).
            "monitor/duplicate_box_rate": counts["duplicate_boxes"] / max(n_boxes, 1)
            if n_box_samples
            else nan,
            "monitor/centre_spread_ratio": centre_spread_ratio(
                np.array(predicted_centres).reshape(-1, 2), np.array(true_centres).reshape(-1, 2)
            ),
        }
    )
    return out


def rollout_monitors(
    rollout: Any, recheck_phrases: Sequence[str] = RECHECK_PHRASES
) -> dict[str, float]:
    rows = [rollout.prompt_of(i) for i in range(len(rollout.texts))]
    return completion_monitors(
        rollout.texts,
        [p.sample.solution for p in rows],
        [p.sample.task for p in rows],
        [p.box_space for p in rows],
        recheck_phrases,
    )
