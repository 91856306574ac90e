"""COCO-style average precision for many samples at once (pure: numpy only).

Reproduces pycocotools ``COCOeval`` (bbox, area range "all", no crowd, maxDets 100) on *one
image per sample*, the way VLM-R1 builds its detection rewards (labels -> categories, AP
averaged over the ground-truth categories), without building a COCOeval per sample:

* per (sample, category) "unit": detections sorted by score (stable, so VLM-R1's all-1.0
  scores keep answer order), at most ``max_dets``; greedy matching in that order, each
  detection taking the *unmatched* ground truth of highest IoU >= t (ties -> the later gt,
  as pycocotools' ``<`` comparison does), vectorised over units and the 10 IoU thresholds;
* precision/recall by cumulative sums, precision made monotone from the right, sampled at the
  101 recall points ``0, 0.01, ..., 1`` (first index with recall >= r, else 0);
* AP of a sample = mean over its gt categories and thresholds (``AP50``: threshold 0.5 only).

Predicted labels absent from the ground truth belong to no evaluated category (COCOeval skips
categories without ground truth), so they neither help nor hurt AP; ``od_length`` is what
penalises them. Reference: Lin et al., "Microsoft COCO", and pycocotools ``cocoeval.py``.

Also VLM-R1's weighted detection score (``weighted_sum``): ``vlmr1_iou_matrix``,
``greedy_match`` and ``weighted_detection_score``, after VLM-R1's ``grpo_jsonl.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vlm_r1.rewards.box_math import paired_iou

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class Detections:
    """One sample: predicted boxes/labels/scores and ground-truth boxes/labels."""

    pred_boxes: np.ndarray  # [P, 4] xyxy
    pred_labels: Sequence[str]
    pred_scores: np.ndarray  # [P]
    gt_boxes: np.ndarray  # [G, 4] xyxy
    gt_labels: Sequence[str]


def _units(samples: Sequence[Detections], max_dets: int):
    """Split samples into (sample, category) units and pad them into dense arrays.

    Returns ``owners [U]``, ``ious [U, D, G]``, ``det_valid [U, D]``, ``gt_valid [U, G]``,
    ``n_gt [U]``. Detections inside a unit are in descending score order (stable).
    """
    owners: list[int] = []
    det_unit, det_boxes, det_scores = [], [], []
    gt_unit, gt_boxes = [], []
    for index, s in enumerate(samples):
        categories: dict[str, int] = {}
        for label in s.gt_labels:
            if label not in categories:
                categories[label] = len(owners)
                owners.append(index)
        if not categories:
            continue
        gt_unit.extend(categories[label] for label in s.gt_labels)
        gt_boxes.append(np.asarray(s.gt_boxes, dtype=np.float64).reshape(-1, 4))
        units = [categories.get(label, -1) for label in s.pred_labels]
        det_unit.extend(units)
        det_boxes.append(np.asarray(s.pred_boxes, dtype=np.float64).reshape(-1, 4))
        det_scores.append(np.asarray(s.pred_scores, dtype=np.float64).reshape(-1))
    n_units = len(owners)
    det_u = np.asarray(det_unit, dtype=np.int64)
    d_boxes = np.concatenate(det_boxes) if det_boxes else np.zeros((0, 4))
    d_scores = np.concatenate(det_scores) if det_scores else np.zeros(0)
    keep = det_u >= 0  # labels outside the sample's gt categories are not evaluated
    det_u, d_boxes, d_scores = det_u[keep], d_boxes[keep], d_scores[keep]
    # Sort by unit, then score descending; lexsort is stable, so ties keep answer order.
    order = np.lexsort((-d_scores, det_u))
    det_u, d_boxes = det_u[order], d_boxes[order]
    det_rank = _rank_within(det_u)
    kept = det_rank < max_dets
    det_u, d_boxes, det_rank = det_u[kept], d_boxes[kept], det_rank[kept]
    gt_u = np.asarray(gt_unit, dtype=np.int64)
    g_boxes = np.concatenate(gt_boxes) if gt_boxes else np.zeros((0, 4))
    g_order = np.argsort(gt_u, kind="stable")
    gt_u, g_boxes = gt_u[g_order], g_boxes[g_order]
    gt_rank = _rank_within(gt_u)
    max_d = int(det_rank.max()) + 1 if len(det_rank) else 1
    max_g = int(gt_rank.max()) + 1 if len(gt_rank) else 1
    det_valid = np.zeros((n_units, max_d), dtype=bool)
    det_valid[det_u, det_rank] = True
    gt_valid = np.zeros((n_units, max_g), dtype=bool)
    gt_valid[gt_u, gt_rank] = True
    n_gt = np.bincount(gt_u, minlength=n_units)
    # IoU only for (detection, gt) pairs of the same unit, scattered into the padded cube.
    pair_det = np.repeat(np.arange(len(det_u)), n_gt[det_u])
    pair_gt_rank = _rank_within(pair_det)
    pair_gt = np.searchsorted(gt_u, det_u[pair_det]) + pair_gt_rank
    ious = np.full((n_units, max_d, max_g), -1.0)  # [U, D, G]
    ious[det_u[pair_det], det_rank[pair_det], pair_gt_rank] = paired_iou(
        d_boxes[pair_det], g_boxes[pair_gt]
    )
    return np.asarray(owners, dtype=np.int64), ious, det_valid, gt_valid, n_gt


def _rank_within(sorted_groups: np.ndarray) -> np.ndarray:
    """Position of each element inside its run of equal values in a sorted array."""
    if len(sorted_groups) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_groups)]))
    return np.arange(len(sorted_groups)) - run_start


def _match(
    ious: np.ndarray, det_valid: np.ndarray, gt_valid: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Greedy COCO matching; returns ``det_matched`` ``[U, T, D]``."""
    units, max_d, max_g = ious.shape
    t = len(thresholds)
    thr = np.minimum(thresholds, 1 - 1e-10)[None, :, None]  # [1, T, 1]
    gt_taken = np.zeros((units, t, max_g), dtype=bool)
    det_matched = np.zeros((units, t, max_d), dtype=bool)
    cols = np.arange(t)[None, :]
    for d in range(max_d):
        rows = np.flatnonzero(det_valid[:, d])  # units that still have a d-th detection
        cand = ious[rows, None, d, :]  # [u, 1, G]
        ok = gt_valid[rows, None, :] & ~gt_taken[rows] & (cand >= thr)  # [u, T, G]
        masked = np.where(ok, cand, -np.inf)
        is_best = ok & (masked == masked.max(axis=-1, keepdims=True))
        last = max_g - 1 - np.argmax(is_best[..., ::-1], axis=-1)  # [u, T]: ties -> later gt
        hit = ok.any(axis=-1)  # [u, T]
        gt_taken[rows[:, None], cols, last] |= hit
        det_matched[rows, :, d] = hit
    return det_matched


def _recall_point_counts(max_gt: int) -> np.ndarray:
    """``C[n, k]``: how many of the 101 recall points need exactly k true positives, n gts.

    COCO samples precision at recall points r = 0, 0.01, ..., 1, each at the first detection
    whose recall ``tp / n`` is >= r. The k needed is found with the same float divisions and
    ``searchsorted(side='left')`` as pycocotools, so boundary cases round identically.
    """
    counts = np.zeros((max_gt + 1, max_gt + 1), dtype=np.float64)
    for n in range(1, max_gt + 1):
        steps = np.searchsorted(np.arange(n + 1) / n, COCO_RECALL_POINTS, side="left")
        counts[n] = np.bincount(steps, minlength=max_gt + 1)[: max_gt + 1]
    return counts


def _average_precision(
    det_matched: np.ndarray, det_valid: np.ndarray, n_gt: np.ndarray
) -> np.ndarray:
    """101-point interpolated AP per unit and threshold -> ``[U, T]``.

    Recall only grows at true positives, so the first detection reaching recall r is the k-th
    true positive (k = 0: the first detection). AP is then a weighted sum over k of the
    precision envelope at those positions, weights from ``_recall_point_counts``; a k beyond
    the detections found contributes 0, as in pycocotools.
    """
    units, t, max_d = det_matched.shape
    valid = det_valid[:, None, :]  # [U, 1, D]; valid detections are a prefix of each unit
    tp = np.cumsum(det_matched & valid, axis=-1, dtype=np.int32).astype(np.float64)  # [U, T, D]
    seen = np.arange(1, max_d + 1, dtype=np.float64)  # tp + fp at each valid position
    precision = np.where(valid, tp / (seen + np.spacing(1)), 0.0)
    envelope = np.maximum.accumulate(precision[..., ::-1], axis=-1)[..., ::-1]  # [U, T, D]
    max_gt = int(n_gt.max())
    # value[u, t, k] = envelope at the k-th true positive (k = 0: at the first detection).
    value = np.zeros((units, t, max_gt + 1))
    value[:, :, 0] = np.where(det_valid[:, None, 0], envelope[:, :, 0], 0.0)
    u, tt, d = np.nonzero(det_matched & valid)
    value[u, tt, tp[u, tt, d].astype(np.int64)] = envelope[u, tt, d]
    weights = _recall_point_counts(max_gt)[n_gt]  # [U, K]
    return np.einsum("utk,uk->ut", value, weights) / len(COCO_RECALL_POINTS)


def coco_ap(
    samples: Sequence[Detections],
    iou_thresholds: np.ndarray = COCO_IOU_THRESHOLDS,
    max_dets: int = 100,
) -> np.ndarray:
    """AP per sample and IoU threshold -> ``[N, T]``; NaN where the sample has no ground truth.

    ``coco_ap(s)[:, :].mean(1)`` is COCO mAP@[.5:.95] (``stats[0]``), ``[:, 0]`` is AP50
    (``stats[1]``) when the default thresholds are used.
    """
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    result = np.full((len(samples), len(thresholds)), np.nan)
    owners, ious, det_valid, gt_valid, n_gt = _units(samples, max_dets)
    if len(owners) == 0:
        return result
    matched = _match(ious, det_valid, gt_valid, thresholds)
    per_unit = _average_precision(matched, det_valid, n_gt)  # [U, T]
    sums = np.zeros_like(result)
    np.add.at(sums, owners, per_unit)
    counts = np.bincount(owners, minlength=len(samples)).astype(float)
    has = counts > 0
    result[has] = sums[has] / counts[has][:, None]
    return result


# VLM-R1's weighted detection score ("weighted_sum"). Source: om-ai-lab/VLM-R1,
# src/open-r1-multimodal/src/open_r1/grpo_jsonl.py, functions ``iou`` and ``detection_score``.


def vlmr1_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``[N, 4]`` with every box of ``b`` ``[M, 4]``, as VLM-R1's
    detection score computes it (``grpo_jsonl.py``, ``iou``) -> ``[N, M]``.

    The overlap counts only when it exceeds one unit in both axes::

        x1' = max(x1), x2' = min(x2 - 1)  (same for y);   inter = (x2' - x1' + 1)(y2' - y1' + 1)
        if x1' < x2' and y1' < y2' else 0;   union = area_a + area_b - inter,
        area = (x2 - x1)(y2 - y1);   IoU = inter / union  (0 when union is 0)

    So it is the continuous IoU except that slivers of width or height <= 1 give 0. An inverted
    box never satisfies the overlap test, so its IoU is 0. The same float operations as VLM-R1,
    so boundary cases round identically.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2] - 1, b[None, :, 2] - 1)
    bottom = np.minimum(a[:, None, 3] - 1, b[None, :, 3] - 1)
    overlaps = (left < right) & (top < bottom)
    inter = np.where(overlaps, (right - left + 1) * (bottom - top + 1), 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    # inter > 0 implies both boxes are well formed, so union >= inter > 0 there.
    return np.where(inter > 0, inter / np.where(inter > 0, union, 1.0), 0.0)


def greedy_match(ious: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """VLM-R1's greedy one-to-one matching -> ``[(pred, gt), ...]`` in matching order.

    Repeatedly the highest IoU among still unmatched (pred, gt) pairs is taken, ties going to
    the first pair in pred-major order (VLM-R1 scans preds then gts with a strict ``>``), until
    that IoU is below ``threshold``. Walking all pairs once in stable descending order and
    skipping used boxes yields the same pairs.
    """
    pairs: list[tuple[int, int]] = []
    if ious.size == 0:
        return pairs
    order = np.argsort(-ious, axis=None, kind="stable")  # row-major among equal IoUs
    used_p, used_g = set(), set()
    for flat in order:
        p, g = divmod(int(flat), ious.shape[1])
        if ious[p, g] < threshold:
            break
        if p not in used_p and g not in used_g:
            pairs.append((p, g))
            used_p.add(p)
            used_g.add(g)
    return pairs


@dataclass(frozen=True)
class WeightedScore:
    """VLM-R1's weighted detection score and its parts."""

    score: float
    position: float = 0.0
    label: float = 0.0
    completeness: float = 0.0
    matched: int = 0


def weighted_detection_score(
    ious: np.ndarray,
    same_label: np.ndarray,
    iou_threshold: float = 0.5,
    weights: tuple[float, float, float] = (0.7, 0.0, 0.3),
) -> WeightedScore:
    """VLM-R1's ``detection_score`` from the IoU matrix ``[P, G]`` (``vlmr1_iou_matrix``) and
    whether each (pred, gt) pair's labels agree ``[P, G]``.

    With M the pairs of ``greedy_match`` at ``iou_threshold`` (a pair whose labels differ still
    uses up both boxes but counts IoU 0), and weights (alpha, beta, gamma)::

        position     = sum_{(p, g) in M, labels agree} IoU(p, g) / G
        label        = |{(p, g) in M : labels agree}| / G
        completeness = 1 - ((G - |M|) / G + (P - |M|) / P) / 2     (miss and false-alarm rates)
        score        = (alpha position + beta label + gamma completeness) / (alpha + beta + gamma)

    Edge cases as VLM-R1: G = 0 -> 1 if P = 0 else 0; P = 0 (G > 0) -> 0. Defaults are VLM-R1's
    (0.7, 0.0, 0.3, IoU 0.5). Source: om-ai-lab/VLM-R1 ``grpo_jsonl.py``, ``detection_score``.
    """
    alpha, beta, gamma = weights
    total = alpha + beta + gamma
    if total <= 0:
        raise ValueError(f"detection weights must have a positive sum, got {weights}")
    n_pred, n_gt = ious.shape
    if n_gt == 0:
        return WeightedScore(1.0 if n_pred == 0 else 0.0)
    if n_pred == 0:
        return WeightedScore(0.0)
    pairs = greedy_match(ious, iou_threshold)
    agree = [(p, g) for p, g in pairs if same_label[p, g]]
    position = sum(float(ious[p, g]) for p, g in agree) / n_gt
    label = len(agree) / n_gt
    completeness = 1.0 - ((n_gt - len(pairs)) / n_gt + (n_pred - len(pairs)) / n_pred) / 2.0
    score = (alpha * position + beta * label + gamma * completeness) / total
    return WeightedScore(score, position, label, completeness, len(pairs))
