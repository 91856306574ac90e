"""Is the pretrained base competent? Acc@0.5 per expression kind, against a stated bar.

The paper's argument needs a base that already grounds every kind of expression (Qwen2.5-VL-3B
starts at ~86% on RefCOCO): post-training then keeps or loses those skills. Eval predictions
carry a sample id and its IoU; the kind lives in the data row (``shapes`` writes it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vlm_r1.rewards.box_math import iou_matrix

#: The base counts as competent when every expression kind reaches this Acc@0.5.
COMPETENCE_BAR = 0.5


def _scored(
    predictions: str | Path, data: str | Path
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(data row, prediction)`` for each scored prediction (one with an ``iou``). A prediction
    whose id is not in ``data`` is an error: the two files must belong together."""
    with open(data, encoding="utf-8") as handle:
        rows = {str(row["id"]): row for row in map(json.loads, handle)}
    with open(predictions, encoding="utf-8") as handle:
        for prediction in map(json.loads, handle):
            if prediction.get("iou") is None:
                continue
            if str(prediction["id"]) not in rows:
                raise ValueError(f"prediction {prediction['id']!r} is not a row of {data}")
            yield rows[str(prediction["id"])], prediction


def accuracy_by_kind(
    predictions: str | Path, data: str | Path, threshold: float = 0.5
) -> dict[str, dict[str, float]]:
    """``{kind: {"acc@0.5": ..., "n": ...}}`` over the scored REC predictions, plus ``"all"``."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for row, prediction in _scored(predictions, data):
        hit = float(prediction["iou"]) >= threshold
        hits[str(row.get("kind", "unknown"))].append(hit)
        hits["all"].append(hit)
    return {
        kind: {"acc@0.5": sum(h) / len(h), "n": float(len(h))} for kind, h in sorted(hits.items())
    }


#: Where a REC answer's box lands, in the order ``where_boxes_land`` reports it.
LANDINGS = ("named object", "another object", "no object")


def where_boxes_land(
    predictions: str | Path, data: str | Path, threshold: float = 0.5
) -> dict[str, float] | None:
    """The share of scored answers whose box matches (IoU >= ``threshold``) the object the
    expression names, another object of the scene, or none; ``None`` when the data rows do not
    describe their scene (``objects`` and ``target``, as ``shapes`` writes them).

    Why: Acc@0.5 alone cannot tell a model that does not find objects among several (its box
    blends them or lands between them) from one that finds them but not the one the words name.
    The two need different remedies, and on a weak base the second is close to chance among the
    scene's objects. "Named" is the eval's own score (its ``iou``); other objects are scored
    with ``box_math.iou_matrix`` in the same continuous convention."""
    counts = dict.fromkeys(LANDINGS, 0)
    for row, prediction in _scored(predictions, data):
        if "objects" not in row or "target" not in row:
            return None
        boxes = np.asarray([o[-1] for o in row["objects"]], dtype=np.float64).reshape(-1, 4)
        others = np.delete(boxes, int(row["target"]), axis=0)
        predicted = prediction.get("pred") or []
        if float(prediction["iou"]) >= threshold:
            counts["named object"] += 1
        elif predicted and len(others) and iou_matrix(predicted[:1], others).max() >= threshold:
            counts["another object"] += 1
        else:
            counts["no object"] += 1
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else None


def competence(by_kind: dict[str, dict[str, float]], bar: float = COMPETENCE_BAR) -> dict[str, Any]:
    """Which kinds reach ``bar``; ``competent`` only when all of them do."""
    kinds = {k: v["acc@0.5"] for k, v in by_kind.items() if k != "all"}
    below = sorted(k for k, acc in kinds.items() if acc < bar)
    return {"bar": bar, "competent": bool(kinds) and not below, "below_bar": below}
