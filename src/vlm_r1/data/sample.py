"""``Sample``: the one record type that flows through GRPO, SFT and evaluation.

Images are paths (opened lazily, never held decoded); boxes are in original-image pixels,
``[x1, y1, x2, y2]``; ``source`` ("file:line") lets any later error name where the sample came
from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["rec", "ovd", "count", "qa", "point"]
#: ``point``: click grounding (GUI-style): the solution is the target's box, the model answers
#: one point ``[x, y]`` that should fall inside it.
TASKS: tuple[str, ...] = ("rec", "ovd", "count", "qa", "point")
#: VLM-R1's REC question wording (its processed REC files use it verbatim).
REC_QUESTION = (
    "Please provide the bounding box coordinate of the region this sentence describes: {}."
)
#: accu_reward_method values (VLM-R1 names included) that mean "this is detection".
DETECTION_METHODS = frozenset(
    {
        "map",
        "map50",
        "od_ap",
        "od_ap50",
        "odLength",
        "weighted_sum",
        "ap",
        "ap50",
        "od_length",
        "detection_weighted",
    }
)
#: accu_reward_method values that mean "this is point grounding" (task ``point``).
POINT_METHODS = frozenset({"point_in_box", "point_distance"})


@dataclass(frozen=True)
class BoxSolution:
    """Ground-truth boxes in original-image pixels with their labels (``None`` for REC) and,
    for a multi-image sample, the number of the image each box lies in (1 = the first image;
    empty: every box is in image 1). Each box's pixels are those of its own image."""

    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[str | None, ...]
    images: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.labels)} labels")
        if self.images and len(self.images) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.images)} image numbers")

    def image_numbers(self) -> tuple[int, ...]:
        """Each box's image number (1 where none was given)."""
        return self.images or (1,) * len(self.boxes)

    def to_json(self) -> list[dict[str, Any]]:
        """VLM-R1's answer format: ``[{"bbox_2d": [...], "label": ...}]``, with ``"image": k``
        on each box when the sample names images."""
        return [
            {
                "bbox_2d": [round(v, 2) for v in b],
                **({"label": lab} if lab else {}),
                **({"image": k} if self.images else {}),
            }
            for b, lab, k in zip(self.boxes, self.labels, self.image_numbers(), strict=True)
        ]


Solution = BoxSolution | str


@dataclass(frozen=True)
class Sample:
    """One training/evaluation example."""

    id: str
    images: tuple[str, ...]
    question: str
    solution: Solution
    task: Task
    reward_method: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def boxes(self) -> BoxSolution | None:
        return self.solution if isinstance(self.solution, BoxSolution) else None

    def answer_text(self) -> str:
        """The gold answer as text (what SFT trains on before coordinate conversion)."""
        if isinstance(self.solution, BoxSolution):
            import json

            single = len(self.solution.boxes) == 1 and not self.solution.images
            if self.task in ("rec", "point") and single:
                return json.dumps([round(v, 2) for v in self.solution.boxes[0]])
            return json.dumps(self.solution.to_json()) if self.solution.boxes else "None"
        return self.solution
