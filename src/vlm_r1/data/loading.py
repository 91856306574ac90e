"""Training samples from the data section of a config: read once, before any model loads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from vlm_r1.data.jsonl import DataError, read_samples
from vlm_r1.data.sample import Sample
from vlm_r1.rewards.registry import declared_methods

logger = logging.getLogger(__name__)


def load_training_samples(data: Any, is_main: bool, rewards: Sequence[Any] = ()) -> list[Sample]:
    """Read ``data`` (a ``DataConfig``) under its limits; rows may name only registered rewards
    or the custom rewards / judge that ``rewards`` (the config's reward terms) declare."""
    reader = read_samples(
        data.train,
        data.image_folders,
        reward_methods=data.reward_methods,
        on_error=data.on_error,
        check_images=data.check_images,
        allowed_methods=declared_methods(rewards),
        max_image_pixels=data.max_image_pixels,
        max_text_chars=data.max_text_chars,
    )
    samples = []
    for sample in reader:
        samples.append(sample)
        if data.max_samples and len(samples) >= data.max_samples:
            break
    if is_main:
        logger.info("%s", reader.stats.summary())
    if not samples:
        raise DataError(
            str(data.train),
            "<file>",
            f"no usable samples ({reader.stats.summary()})",
            None,
            "empty",
        )
    return samples
