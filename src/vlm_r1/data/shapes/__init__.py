"""A synthetic grounding world: coloured shapes with exact boxes, REC / OVD / counting / point
(click) tasks.

It stands in for RefCOCO (in-domain) and LISA-Grounding (out-of-domain) so the paper's central
comparison can run on a laptop:

* ``train`` / ``eval_in``: plain backgrounds; referring expressions name attributes
  ("the small red triangle") or one spatial relation ("the circle left of the blue square").
* ``eval_ood``: a shifted style (gradient + noise backgrounds, outlined shapes), colour-shape
  combinations never seen in ``train`` (``HELD_OUT``), and expressions of kinds ``train``
  never uses, which need reasoning: superlatives ("the leftmost star"), ordinals ("the second
  shape from the left"), negation ("the square that is not green").
* ``rec_mix`` (a task, not a split): REC with all of those kinds in either style, in every
  split; what a broadly pretrained model has seen before a narrow post-training on ``rec``.

Every REC expression is checked by ``resolve``: it must pick exactly one object, the target
(the generator asserts it; tests re-check). Objects never overlap, so boxes are exact and
spatial words are unambiguous (relations need clear separation, superlatives and ordinals a
margin). Output is VLM-R1 JSONL + PNG, read back by the same reader as user data.

Layout: ``world`` (objects and scene layout), ``render`` (drawing), ``expressions`` (what a
referring expression means), ``referring`` (making one for a target), ``tasks`` (each
task's records), ``spec`` (options), ``writer`` (JSONL + PNG output).
"""

from vlm_r1.data.shapes.expressions import Expression, resolve
from vlm_r1.data.shapes.referring import IN_DOMAIN_KINDS, OOD_KINDS
from vlm_r1.data.shapes.render import render
from vlm_r1.data.shapes.spec import DEFAULT_TASKS, TASK_KINDS, ShapesSpecError, parse_image_size
from vlm_r1.data.shapes.tasks import ShapesRecord, generate
from vlm_r1.data.shapes.world import (
    COLOURS,
    HELD_OUT,
    SHAPES,
    SPLITS,
    Obj,
    World,
    make_scene,
)
from vlm_r1.data.shapes.writer import write_shapes

__all__ = [
    "COLOURS",
    "DEFAULT_TASKS",
    "HELD_OUT",
    "IN_DOMAIN_KINDS",
    "OOD_KINDS",
    "SHAPES",
    "SPLITS",
    "TASK_KINDS",
    "Expression",
    "Obj",
    "ShapesRecord",
    "ShapesSpecError",
    "World",
    "generate",
    "make_scene",
    "parse_image_size",
    "render",
    "resolve",
    "write_shapes",
]
