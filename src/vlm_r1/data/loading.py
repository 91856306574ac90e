"""Training samples from the data section of a config: read once, before any model loads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from vlm_r1.data.hf_datasets import DatasetReader, is_datasets_source
from vlm_r1.data.jsonl import DataError, RowReader, read_samples
from vlm_r1.data.sample import Sample
from vlm_r1.rewards.registry import declared_methods

logger = logging.getLogger(__name__)


def open_training_data(data: Any, rewards: Sequence[Any] = ()) -> RowReader:
    """The reader ``data`` (a ``DataConfig``) names: one ``datasets`` source (``hf:...``) or
    VLM-R1 JSONL/JSON files. Both check every row with the same rules and limits; rows may
    name only registered rewards or the custom rewards / judge that ``rewards`` (the config's
    reward terms) declare. Opening a ``datasets`` source loads it (or starts streaming it), so
    a missing package, an unreachable hub or a wrong column fails here."""
    common = dict(
        on_error=data.on_error,
        check_images=data.check_images,
        allowed_methods=declared_methods(rewards),
        max_image_pixels=data.max_image_pixels,
        max_text_chars=data.max_text_chars,
    )
    if is_datasets_source(data.train):
        return DatasetReader(
            data.train,
            split=data.split,
            columns=data.columns,
            streaming=data.streaming,
            subset=data.subset,
            cache_dir=data.cache_dir,
            image_folder=data.image_folders,
            reward_method=data.reward_methods,
            **common,
        )
    return read_samples(
        data.train, data.image_folders, reward_methods=data.reward_methods, **common
    )


def load_training_samples(data: Any, is_main: bool, rewards: Sequence[Any] = ()) -> list[Sample]:
    """The first ``data.max_samples`` usable samples (all without it); reading stops there, so
    a streamed source is read no further."""
    reader = open_training_data(data, rewards)
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
