"""Evaluation metrics over a whole split.

REC (the paper's metric): accuracy at IoU 0.5 and mean IoU. Two conventions:

* ``default``: continuous IoU, correct when IoU >= 0.5, an unreadable answer scores IoU 0;
* ``vlm-r1``: what VLM-R1's evaluation scripts compute, to compare with published numbers:
  inclusive-pixel IoU (+1 on widths and heights), correct only when IoU > 0.5, an answer
  without a box counts as ``[0, 0, 0, 0]``.

Detection: COCO mAP@[.5:.95], AP50 and AR@100 with pycocotools at the dataset level (one COCO
image per sample, one category per label name). VLM-R1 has no such script.

Point (click) grounding: ``acc``, the share of answered points inside their target's box (edges
included), and ``mean_distance``, the mean distance from the point to the box over the image
diagonal (0 inside; an unreadable answer counts 1, as far as a point in the image can be).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

from vlm_r1.rewards.box_math import paired_iou
from vlm_r1.rewards.points import image_diagonal, inside_box, point_box_distance

CONVENTIONS = ("default", "vlm-r1")


def rec_metrics(
    predicted: Sequence[np.ndarray | None], truth: Sequence[np.ndarray], convention: str = "default"
) -> tuple[dict[str, float], np.ndarray]:
    """``({"acc@0.5", "miou"}, per-sample IoU)`` for first predicted box vs first gt box."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown metric convention {convention!r}; choose one of {CONVENTIONS}")
    vlm_r1 = convention == "vlm-r1"
    missing = np.zeros(4) if vlm_r1 else None
    pred = np.array(
        [
            p[0] if p is not None and len(p) else (missing if vlm_r1 else [np.nan] * 4)
            for p in predicted
        ],
        dtype=float,
    ).reshape(-1, 4)
    gt = np.array([t[0] for t in truth], dtype=float).reshape(-1, 4)
    readable = ~np.isnan(pred).any(axis=1)
    ious = np.where(readable, paired_iou(np.nan_to_num(pred), gt, inclusive=vlm_r1), 0.0)
    correct = ious > 0.5 if vlm_r1 else ious >= 0.5
    n = max(len(ious), 1)
    return {"acc@0.5": float(correct.sum() / n), "miou": float(ious.sum() / n)}, ious


def point_metrics(
    predicted: Sequence[np.ndarray | None],
    truth: Sequence[np.ndarray],
    image_sizes: Sequence[tuple[int, int] | None],
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """``({"acc", "mean_distance"}, per-sample inside, per-sample normalised distance)`` for
    each predicted point ``[x, y]`` (original pixels, or None when unreadable) against the first
    box of its ground truth. The normalised distance is clipped to [0, 1]; without an image
    size it is 0 inside the box and 1 outside."""
    n = len(predicted)
    inside = np.zeros(n, dtype=bool)
    normalised = np.ones(n)
    for i, (point, boxes, size) in enumerate(zip(predicted, truth, image_sizes, strict=True)):
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        if point is None or not len(boxes):
            continue
        distance = float(point_box_distance(point, boxes[0])[0])
        inside[i] = bool(inside_box(distance))
        diagonal = image_diagonal(size)
        if inside[i]:
            normalised[i] = 0.0
        elif diagonal is not None and np.isfinite(distance):
            normalised[i] = min(distance / diagonal, 1.0)
    count = max(n, 1)
    metrics = {"acc": float(inside.sum() / count), "mean_distance": float(normalised.sum() / count)}
    return metrics, inside, normalised


def coco_detection_metrics(
    predicted: Sequence[tuple[np.ndarray, Sequence[str], Sequence[float]]],
    truth: Sequence[tuple[np.ndarray, Sequence[str]]],
    extra_categories: Sequence[str] = (),
) -> dict[str, float]:
    """Dataset-level COCO bbox metrics. Boxes are xyxy in original pixels; every prediction
    without a score scores 1.0 (ties keep answer order). Labels outside the gt/listed
    categories cannot be evaluated and are counted in ``unknown_label_rate``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = sorted({lab for _, labels in truth for lab in labels} | set(extra_categories))
    category = {name: i + 1 for i, name in enumerate(names)}
    annotations, detections, unknown, total = [], [], 0, 0
    for image_id, (boxes, labels) in enumerate(truth, start=1):
        for box, label in zip(np.asarray(boxes).reshape(-1, 4), labels, strict=True):
            w, h = max(box[2] - box[0], 0.0), max(box[3] - box[1], 0.0)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category[label],
                    "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
    for image_id, (boxes, labels, scores) in enumerate(predicted, start=1):
        for box, label, score in zip(np.asarray(boxes).reshape(-1, 4), labels, scores, strict=True):
            total += 1
            if label not in category:
                unknown += 1
                continue
            w, h = max(box[2] - box[0], 0.0), max(box[3] - box[1], 0.0)
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": category[label],
                    "score": float(score),
                    "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                }
            )
    out = {"unknown_label_rate": unknown / max(total, 1), "predictions": float(total)}
    if not annotations:
        return {**out, "mAP": float("nan"), "AP50": float("nan"), "AR100": float("nan")}
    if not detections:
        return {**out, "mAP": 0.0, "AP50": 0.0, "AR100": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i} for i in range(1, len(truth) + 1)],
            "categories": [{"id": i, "name": n} for n, i in category.items()],
            "annotations": annotations,
        }
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {**out, "mAP": float(stats[0]), "AP50": float(stats[1]), "AR100": float(stats[8])}
