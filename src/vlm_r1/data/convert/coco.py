"""COCO detection (``instances.json``) -> open-vocabulary detection JSONL.

As in VLM-R1's OVD data, the question lists category names to detect, the ones present in the
image plus some that are absent (so "None" and ignoring absent classes are learned); the answer
is VLM-R1's ```json [{"bbox_2d": [x1, y1, x2, y2], "label": name}]``` in original pixels.
Crowd annotations are skipped.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from vlm_r1.data.convert.refcoco import load_instances, xywh_to_xyxy


def convert_coco(
    instances_path: str | Path,
    out_path: str | Path,
    negatives: int = 3,
    max_positive: int = 10,
    seed: int = 0,
    reward_method: str | None = None,
) -> Path:
    """Write one OVD row per image with at least one non-crowd box; return the JSONL path."""
    instances = load_instances(Path(instances_path))
    names = {c["id"]: c["name"] for c in instances["categories"]}
    boxes = defaultdict(list)
    for ann in instances["annotations"]:
        if not ann.get("iscrowd", 0):
            boxes[ann["image_id"]].append(ann)
    rng = random.Random(seed)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        for image in instances["images"]:
            anns = boxes.get(image["id"], [])
            if not anns:
                continue
            present = sorted({names[a["category_id"]] for a in anns})
            positive = rng.sample(present, min(len(present), max_positive))
            absent = sorted(set(names.values()) - set(present))
            listed = positive + rng.sample(absent, min(len(absent), negatives))
            rng.shuffle(listed)
            objects = [
                {"bbox_2d": xywh_to_xyxy(a["bbox"]), "label": names[a["category_id"]]}
                for a in anns
                if names[a["category_id"]] in positive
            ]
            row = {
                "id": f"coco-{image['id']}",
                "image": image["file_name"],
                "task": "ovd",
                "width": image.get("width"),
                "height": image.get("height"),
                "conversations": [
                    {
                        "from": "human",
                        "value": "<image>Please carefully check the image and detect the "
                        f"following objects: {', '.join(listed)}.",
                    },
                    {"from": "gpt", "value": f"```json\n{json.dumps(objects)}\n```"},
                ],
                **({"accu_reward_method": reward_method} if reward_method else {}),
            }
            handle.write(json.dumps(row) + "\n")
    return out
