"""Prepared prompts: each sample processed once (chat template + images) and kept per prompt.

A step's rollouts and training forwards reuse these features: rows of a micro-batch are
built by stacking the features of their prompts (``stack_prompts``), left-padding the
sequence tensors and concatenating the image tensors, which works the same for every family
(Qwen's flattened patches + ``image_grid_thw``, InternVL's tiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vlm_r1.data.images import DEFAULT_MAX_IMAGE_PIXELS
from vlm_r1.data.jsonl import load_sample_images
from vlm_r1.data.sample import Sample
from vlm_r1.models.adapter import VLMAdapter
from vlm_r1.models.boxes import BoxSpace


@dataclass
class PreparedPrompt:
    """One sample as its model family's inputs; ``adapter`` is that family, which says how to
    read the features (encoder units, continuation positions) in the shared forward paths."""

    sample: Sample
    features: dict[str, torch.Tensor]  # one prompt: sequence tensors [1, L], image tensors
    box_space: BoxSpace | None  # of the first image, for box rewards
    image_size: tuple[int, int] | None
    adapter: VLMAdapter

    @property
    def length(self) -> int:
        return int(self.features["input_ids"].shape[1])


def prepare_prompt(
    adapter: VLMAdapter,
    processor: Any,
    sample: Sample,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> PreparedPrompt:
    """Decode the sample's images (each header checked against ``max_image_pixels`` first,
    ``data.max_image_pixels``) and build the model's inputs for its chat prompt."""
    images = load_sample_images(sample, max_image_pixels)
    text = adapter.prompt(sample.task, sample.question)
    batch = adapter.prepare_inputs(processor, [images], [text])
    features = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    space = adapter.box_space(processor, images[0].size) if images else None
    return PreparedPrompt(sample, features, space, images[0].size if images else None, adapter)


def is_sequence_tensor(value: torch.Tensor, length: int) -> bool:
    """A per-token tensor of one prompt (``[1, length]``: ids, masks, token types)."""
    return value.ndim == 2 and value.shape[0] == 1 and value.shape[1] == length


def stack_prompts(
    features: Sequence[dict[str, torch.Tensor]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Batch single-prompt features: sequence tensors left-padded to one length, others concatenated."""
    longest = max(int(f["input_ids"].shape[1]) for f in features)
    out: dict[str, torch.Tensor] = {}
    for key in features[0]:
        parts = []
        for f in features:
            value = f[key]
            length = int(f["input_ids"].shape[1])
            if is_sequence_tensor(value, length):
                pad_value = pad_token_id if key == "input_ids" else 0
                value = torch.nn.functional.pad(value, (longest - length, 0), value=pad_value)
            parts.append(value)
        out[key] = torch.cat(parts, dim=0)
    return out
