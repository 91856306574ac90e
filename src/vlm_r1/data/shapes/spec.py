"""The ``make-data shapes`` options: task kinds, image-size specs, and the error for bad ones."""

from __future__ import annotations

from vlm_r1.errors import UserFacingError

#: ``locate`` is REC on single-object scenes ("the red circle"): basic grounding for warm starts.
#: ``point`` is click grounding ("Click the blue square."): answer a point inside the object.
#: ``rec_mix`` is REC with every expression kind in both image styles, in every split: the
#: broad pretraining mix whose skills a narrow post-training on ``rec`` does not exercise.
#: ``named`` is REC whose target is named by colour and shape ("the purple circle") among 2-5
#: objects: only reading what each object is finds it, so it teaches the colour and shape words.
#: ``rec_negation`` is REC whose expressions are all negations, in both styles, every split.
#: (New kinds go last: a kind's index seeds its records.)
TASK_KINDS = ("rec", "ovd", "count", "locate", "point", "rec_mix", "named", "rec_negation")
DEFAULT_TASKS = ("rec", "ovd", "count")


class ShapesSpecError(UserFacingError, ValueError):
    """A ``make-data shapes`` option is out of range (task, image size, scale, counts)."""


def parse_image_size(spec: str | int) -> tuple[int, int]:
    """``"224"`` -> (224, 224); ``"112..448"`` -> random sides in that range per image."""
    text = str(spec)
    low, _, high = text.partition("..")
    try:
        bounds = (int(low), int(high or low))
    except ValueError as err:
        raise ShapesSpecError(f"--image-size must be N or MIN..MAX, got {text!r}") from err
    if not 32 <= bounds[0] <= bounds[1] <= 4096:
        raise ShapesSpecError(f"--image-size must lie in 32..4096 with MIN <= MAX, got {text!r}")
    return bounds
