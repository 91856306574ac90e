"""Test oracle: VLM-R1's ``weighted_sum`` detection reward, transcribed in plain Python.

Source: om-ai-lab/VLM-R1, ``src/open-r1-multimodal/src/open_r1/grpo_jsonl.py``, functions
``iou``, ``detection_score``, ``clean_text`` and the ``accu_reward_method == 'weighted_sum'``
branch of ``accuracy_reward`` (read at commit 90052f4). Written here from that definition, not
copied; loops and lists on purpose, so it shares nothing with ``vlm_r1.rewards.detection``.

The definition, for boxes ``{"bbox_2d": [x1, y1, x2, y2], "label": str}``:

* IoU: overlap ``w = min(x2) - max(x1)``, ``h = min(y2) - max(y1)`` counts only when both
  exceed 1 unit (VLM-R1 writes ``max(x1) < min(x2 - 1)``, then ``(x2' - x1' + 1)``); union
  from the continuous areas ``(x2 - x1)(y2 - y1)``; an exception (union 0) gives 0.
* Greedy matching: repeatedly take the highest IoU among the still unmatched (pred, gt) pairs
  (the first such pair in pred-major order on ties; strict ``>``), stop when it is below the
  threshold. A matched pair whose lower-cased labels differ still *consumes both boxes* but
  contributes IoU 0.
* position = sum of matched IoUs / #gt;  label = #label-correct matches / #gt;
  completeness = 1 - (#unmatched gt / #gt + #unmatched pred / #pred) / 2;
  score = (alpha position + beta label + gamma completeness) / (alpha + beta + gamma),
  alpha, beta, gamma = 0.7, 0.0, 0.3.
* Edge cases: no gt -> 1 if no prediction else 0; gt but no prediction (none, unparsable
  JSON, no fenced block) -> 0. In the ``weighted_sum`` branch a solution that reads "none"
  scores 1 only when the answer reads exactly "none" (after ``clean_text``).

VLM-R1 takes boxes from the first fenced ```json block of the (lower-cased) answer. A predicted
box without a "label" key is undefined there (its ``except`` assigns ``pred_box`` instead of
``pred_label``, leaving ``pred_label`` unbound or stale): this oracle raises ``ValueError`` on
it instead, so such inputs cannot be used as oracle cases by mistake.
"""

from __future__ import annotations

import json
import re


def clean_text(text: str) -> str:
    """Last ``<answer>`` block if any; newlines -> spaces; strip; drop trailing dots; lower."""
    answers = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    if answers:
        text = answers[-1]
    for char in ("\n", "\r"):
        text = re.sub(r"(?<=\s)" + re.escape(char), "", text)  # after whitespace: dropped
        text = re.sub(r"(?<!\s)" + re.escape(char), " ", text)  # otherwise: a space
    return text.strip().rstrip(".").lower()


def vlmr1_iou(a, b) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2] - 1, b[2] - 1), min(a[3] - 1, b[3] - 1)
    overlap = 0
    if left < right and top < bottom:
        overlap = (right - left + 1) * (bottom - top + 1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return float(overlap) / union  # ZeroDivisionError is handled by the caller


def _boxes(text: str) -> list | None:
    found = re.search(r"```json(.*?)```", clean_text(text), re.DOTALL)
    return None if found is None else json.loads(found.group(1).strip())


def detection_score(
    content: str, sol: str, iou_threshold=0.5, alpha=0.7, beta=0.0, gamma=0.3
) -> float:
    """VLM-R1 ``detection_score(content, sol)`` on answer and solution text."""
    try:
        preds = _boxes(content) or []
    except ValueError:  # json.JSONDecodeError
        preds = []
    gts = _boxes(sol) or []
    return score_boxes(preds, gts, iou_threshold, alpha, beta, gamma)


def score_boxes(preds: list, gts: list, iou_threshold=0.5, alpha=0.7, beta=0.0, gamma=0.3):
    """The scoring part of ``detection_score`` on already-decoded box dicts."""
    if len(gts) == 0:
        return 1.0 if not preds else 0.0
    if len(preds) == 0:
        return 0.0
    ious = []
    for p in preds:
        row = []
        for g in gts:
            try:
                row.append(vlmr1_iou(p["bbox_2d"], g["bbox_2d"]))
            except Exception:
                row.append(0.0)
        ious.append(row)
    free_p, free_g = list(range(len(preds))), list(range(len(gts)))
    matched_iou, label_hits, n_matches = 0.0, 0, 0
    while free_p and free_g:
        best, bp, bg = -1, -1, -1
        for p in free_p:
            for g in free_g:
                if ious[p][g] > best:
                    best, bp, bg = ious[p][g], p, g
        if best < iou_threshold:
            break
        if not isinstance(preds[bp].get("label"), str):
            raise ValueError("VLM-R1 leaves a matched prediction without a label undefined")
        pred_label = preds[bp]["label"].lower()
        try:
            gt_label = gts[bg]["label"].lower()
        except Exception:
            gt_label = ""
        correct = pred_label == gt_label
        n_matches += 1
        matched_iou += best if correct else 0
        label_hits += 1 if correct else 0
        free_p.remove(bp)
        free_g.remove(bg)
    position = matched_iou / len(gts) if n_matches else 0.0
    label = label_hits / len(gts) if n_matches else 0.0
    miss_rate = len(free_g) / len(gts)
    false_alarm_rate = len(free_p) / len(preds) if preds else 0.0
    completeness = 1.0 - (miss_rate + false_alarm_rate) / 2.0
    return (alpha * position + beta * label + gamma * completeness) / (alpha + beta + gamma)


def weighted_sum_reward(content: str, sol: str) -> float:
    """``accuracy_reward``'s ``weighted_sum`` branch (``sol`` as VLM-R1 stores it)."""
    answer, solution = clean_text(content), clean_text(sol)
    if solution == "none":
        return 1.0 if answer == "none" else 0.0
    return detection_score(answer, solution)
