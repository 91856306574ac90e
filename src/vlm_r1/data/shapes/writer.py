"""Writing the shapes dataset: ``{task}_{split}.jsonl`` files in the VLM-R1 format plus PNGs.

Images are rendered here, each with its own generator, seeded apart from the record's, so the
JSONL rows do not depend on rendering.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vlm_r1.data.shapes.render import render, split_style
from vlm_r1.data.shapes.spec import DEFAULT_TASKS, TASK_KINDS, ShapesSpecError, parse_image_size
from vlm_r1.data.shapes.tasks import generate
from vlm_r1.data.shapes.world import SPLITS


def write_shapes(
    out: str | Path,
    n_train: int = 2000,
    n_eval: int = 200,
    seed: int = 0,
    image_size: str | int = "224",
    tasks: Sequence[str] = DEFAULT_TASKS,
    object_scale: float = 1.0,
) -> dict[str, Path]:
    """Write ``{task}_{split}.jsonl`` files and PNGs under ``out``; returns the JSONL paths."""
    if not 0.25 <= object_scale <= 3.0:
        raise ShapesSpecError(f"object_scale must lie in 0.25..3, got {object_scale}")
    if n_train < 0 or n_eval < 0:
        raise ShapesSpecError(f"sample counts must be >= 0, got n_train={n_train}, n_eval={n_eval}")
    out = Path(out)
    size_spec = parse_image_size(image_size)
    written: dict[str, Path] = {}
    for task in tasks:
        for split in SPLITS:
            n = n_train if split == "train" else n_eval
            folder = out / "images" / split
            folder.mkdir(parents=True, exist_ok=True)
            path = out / f"{task}_{split}.jsonl"
            with open(path, "w", encoding="utf-8") as handle:
                records = generate(task, split, n, seed, size_spec, object_scale)
                for index, record in enumerate(records):
                    name = f"images/{split}/{task}_{index:06d}.png"
                    rng = np.random.default_rng(
                        [seed, SPLITS.index(split), TASK_KINDS.index(task), index, 1]
                    )
                    style = record.style or split_style(split)
                    render(record.scene, record.image_size, style, rng).save(
                        out / name, compress_level=1
                    )
                    row = {
                        "id": f"{task}-{split}-{index}",
                        "image": name,
                        "task": record.task,
                        "split": split,
                        "width": record.image_size[0],
                        "height": record.image_size[1],
                        "conversations": [
                            {"from": "human", "value": "<image>" + record.question},
                            {"from": "gpt", "value": record.answer},
                        ],
                        **({"accu_reward_method": "count"} if task == "count" else {}),
                        **({"accu_reward_method": "point_in_box"} if task == "point" else {}),
                        "objects": [[o.shape, o.colour, o.size, list(o.box)] for o in record.scene],
                        **record.meta,
                    }
                    handle.write(json.dumps(row) + "\n")
            written[f"{task}_{split}"] = path
    return written
