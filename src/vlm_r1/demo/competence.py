"""Is the pretrained base competent? Acc@0.5 per expression kind, against a stated bar.

The paper's argument needs a base that already grounds every kind of expression (Qwen2.5-VL-3B
starts at ~86% on RefCOCO): post-training then keeps or loses those skills. Eval predictions
carry a sample id and its IoU; the kind lives in the data row (``shapes`` writes it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

#: The base counts as competent when every expression kind reaches this Acc@0.5.
COMPETENCE_BAR = 0.5


def accuracy_by_kind(
    predictions: str | Path, data: str | Path, threshold: float = 0.5
) -> dict[str, dict[str, float]]:
    """``{kind: {"acc@0.5": ..., "n": ...}}`` over the scored REC predictions, plus ``"all"``.

    A prediction whose id is not in ``data`` is an error: the two files must belong together."""
    kinds: dict[str, str] = {}
    with open(data, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            kinds[str(row["id"])] = str(row.get("kind", "unknown"))
    hits: dict[str, list[bool]] = defaultdict(list)
    with open(predictions, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("iou") is None:
                continue
            if str(row["id"]) not in kinds:
                raise ValueError(f"prediction {row['id']!r} is not a row of {data}")
            hit = float(row["iou"]) >= threshold
            hits[kinds[str(row["id"])]].append(hit)
            hits["all"].append(hit)
    return {
        kind: {"acc@0.5": sum(h) / len(h), "n": float(len(h))} for kind, h in sorted(hits.items())
    }


def competence(by_kind: dict[str, dict[str, float]], bar: float = COMPETENCE_BAR) -> dict[str, Any]:
    """Which kinds reach ``bar``; ``competent`` only when all of them do."""
    kinds = {k: v["acc@0.5"] for k, v in by_kind.items() if k != "all"}
    below = sorted(k for k, acc in kinds.items() if acc < bar)
    return {"bar": bar, "competent": bool(kinds) and not below, "below_bar": below}
