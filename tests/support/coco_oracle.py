"""pycocotools as the oracle: one image, categories from gt labels, VLM-R1's construction."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _xywh(box):
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0)]


def pycocotools_ap(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels):
    """``(mAP, AP50)`` from COCOeval; ``None`` where COCO is undefined (no gt)."""
    cats = {label: i for i, label in enumerate(dict.fromkeys(gt_labels))}
    if not cats:
        return None
    gt = {
        "images": [{"id": 0, "width": 4096, "height": 4096}],
        "categories": [{"id": i, "name": n} for n, i in cats.items()],
        "annotations": [
            {
                "id": k + 1,
                "image_id": 0,
                "category_id": cats[lab],
                "bbox": _xywh(b),
                "area": _xywh(b)[2] * _xywh(b)[3],
                "iscrowd": 0,
            }
            for k, (b, lab) in enumerate(zip(gt_boxes, gt_labels, strict=True))
        ],
    }
    dets = [
        {"image_id": 0, "category_id": cats[lab], "bbox": _xywh(b), "score": float(s)}
        for b, lab, s in zip(pred_boxes, pred_labels, pred_scores, strict=True)
        if lab in cats
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if not dets:
            return 0.0, 0.0
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def random_case(rng: np.random.Generator):
    n_gt = int(rng.integers(0, 7))
    n_pred = int(rng.integers(0, 12))
    labels = ["cat", "dog", "car", "person"][: int(rng.integers(1, 5))]
    size = float(rng.choice([64, 300, 1000]))

    def boxes(n):
        xy = rng.uniform(0, size, (n, 2))
        wh = rng.uniform(0, size / 2, (n, 2)) * (rng.random((n, 1)) > 0.05)  # some degenerate
        return np.concatenate([xy, xy + wh], axis=1)

    gt_boxes = boxes(n_gt)
    gt_labels = [str(rng.choice(labels)) for _ in range(n_gt)]
    pred_boxes = boxes(n_pred)
    # Near-duplicates of gt boxes so that matches at many IoU levels happen.
    for i in range(n_pred):
        if n_gt and rng.random() < 0.6:
            j = int(rng.integers(n_gt))
            pred_boxes[i] = gt_boxes[j] + rng.normal(0, size / 40, 4)
    if n_pred > 1 and rng.random() < 0.3:
        pred_boxes[-1] = pred_boxes[0]  # exact duplicate
    pred_labels = [str(rng.choice(labels + ["zebra"])) for _ in range(n_pred)]
    if rng.random() < 0.5:
        scores = np.ones(n_pred)  # VLM-R1: every prediction scores 1.0, order breaks ties
    else:
        scores = rng.choice([0.2, 0.5, 0.9, rng.random()], n_pred)
    return pred_boxes, pred_labels, scores, gt_boxes, gt_labels
