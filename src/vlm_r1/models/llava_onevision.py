"""LLaVA-OneVision (transformers-native ``llava_onevision``, e.g.
``llava-hf/llava-onevision-qwen2-0.5b-ov-hf``; Li et al., arXiv 2408.03326).

Architecture (transformers ``modeling_llava_onevision.py``): a SigLIP ``vision_tower``, a
two-layer MLP ``multi_modal_projector``, a learned ``image_newline`` vector and a Qwen2
language model. A single image is tiled AnyRes-max (``image_grid_pinpoints``,
``vision_aspect_ratio="anyres_max_9"``): a base view plus the tiles of the best pinpoint
grid, whose features are unpadded back to the image's aspect ratio with one
``image_newline`` per feature row, so the number of ``<image>`` tokens depends on the
image's size. The processor returns ``pixel_values`` ``[images, max_tiles, C, H, W]``
(zero-padded to the largest tile count of the call), ``image_sizes`` ``[images, 2]`` as
(height, width) and ``batch_num_images`` (images per prompt; a prompt with several images
gets no tiling, one view each).

Prompt: the ``-hf`` checkpoints' chat template (written by transformers'
``convert_llava_onevision_weights_to_hf.py``) is ChatML, each turn rendering its images first
as ``<image>\\n``, then videos as ``<video>\\n``, then the text, closed by ``<|im_end|>``; it has
no default system turn. (The original LLaVA-NeXT training used the ``qwen_1_5`` conversation,
system "You are a helpful assistant."; set ``prompt.system`` to reproduce it.) The processor
expands ``<image>`` / ``<video>`` into the feature count, so those two are the placeholders a
completion must never contain; ``<|im_end|>`` ends the assistant turn.

Boxes: OneVision documents no box format (neither LLaVA-NeXT's ``docs/LLaVA_OneVision.md``
nor the ``-hf`` conversion gives one). Its single-image stage trains on the LLaVA-NeXT data
(LLaVA-NeXT ``scripts/train/single_image.yaml``), which builds on LLaVA-1.5's instruction
mixture, whose region data asks "Please provide the bounding box coordinate of the region
this sentence describes: ..." and answers ``[x1, y1, x2, y2]`` as 0-1 floats with two
decimals (LLaVA-1.5, arXiv 2310.03744, its data mixture). For RefCOCO those floats are
relative to the original image's width and height (haotian-liu/LLaVA issues #623 and #822
show such a box right on the original image and wrong on the padded square; issue #606
reports Visual Genome boxes relative to the padded square instead). OneVision's AnyRes
sees single images unpadded, so the original-image frame is the one its inputs share: we
use ``norm1`` (coordinate / side length). ``boxes.round_boxes`` writes ``norm1`` with 3
decimals (0.1% of a side), finer than LLaVA's 2; a model's 2-decimal answers parse and map
back exactly.

Why ``image_newline`` counts as vision: it is read only inside ``get_image_features`` (and
the video path), so it is part of the encoder output that ``policy.image_features`` computes
once per prompt (under ``no_grad`` when the vision side is frozen). Were it trainable while
the tower is frozen, the shared-features path would silently drop its gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from vlm_r1.models.adapter import VLMAdapter
from vlm_r1.models.registry import register_family


def tiles_per_image(
    image_sizes: Sequence[Sequence[int]],
    batch_num_images: Sequence[int],
    grid_pinpoints: list,
    tile_size: int,
) -> list[int]:
    """How many views (base + tiles) each image really has, as the model counts them.

    An image alone in its prompt is tiled on its best pinpoint grid (transformers
    ``image_size_to_num_patches``, the function ``get_image_features`` itself uses); an image
    of a multi-image prompt is one view. ``image_sizes`` are (height, width).
    """
    from transformers.models.llava_onevision.modeling_llava_onevision import (
        image_size_to_num_patches,
    )

    alone = [int(n) == 1 for n in batch_num_images for _ in range(int(n))]
    if len(alone) != len(image_sizes):
        raise ValueError(
            f"batch_num_images {list(batch_num_images)} counts {len(alone)} images, "
            f"image_sizes has {len(image_sizes)}"
        )
    return [
        image_size_to_num_patches([int(v) for v in size], grid_pinpoints, tile_size) if one else 1
        for size, one in zip(image_sizes, alone, strict=True)
    ]


def pack_tiles(pixel_values: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """``[images, max_tiles, C, H, W]`` (zero-padded) -> ``[sum(counts), C, H, W]``: each
    image's real views, in order, without the padding.

    ``get_image_features`` accepts this 4-D form and does the same slicing itself; packed,
    one prompt's pixels no longer depend on the other images of the processor call, so
    prompts whose images have different tile counts concatenate (``policy.stack_prompts``).
    """
    if pixel_values.ndim != 5:
        raise ValueError(
            f"expected pixel_values [images, tiles, C, H, W], got {tuple(pixel_values.shape)}"
        )
    if len(counts) != pixel_values.shape[0] or max(counts, default=0) > pixel_values.shape[1]:
        raise ValueError(
            f"tile counts {list(counts)} do not fit pixel_values of shape "
            f"{tuple(pixel_values.shape)}"
        )
    return torch.cat([pixel_values[i, :n] for i, n in enumerate(counts)], dim=0)


@register_family
@dataclass
class LlavaOnevisionAdapter(VLMAdapter):
    family: str = "llava_onevision"
    model_types: tuple[str, ...] = ("llava_onevision",)
    coordinate_system: str = "norm1"
    vision_prefixes: tuple[str, ...] = (
        "model.vision_tower",
        "model.multi_modal_projector",
        "model.image_newline",
        "vision_tower",
        "multi_modal_projector",
        "image_newline",
    )
    placeholder_tokens: tuple[str, ...] = ("<image>", "<video>")
    eos_token: str = "<|im_end|>"
    #: ``get_image_features(pixel_values, image_sizes, batch_num_images=...)``.
    encoder_inputs: tuple[str, ...] = ("pixel_values", "image_sizes", "batch_num_images")
    images_per_prompt: bool = True

    def encoder_units(self, features: dict[str, Any]) -> int:
        """``get_image_features`` returns one feature tensor per image: ``image_sizes`` rows."""
        return int(features["image_sizes"].shape[0]) if "image_sizes" in features else 0

    def prepare_inputs(
        self,
        processor: Any,
        images: Sequence[Sequence[Image.Image]],
        texts: Sequence[str],
        system: str = "",
    ) -> Any:
        """The processor's batch, with images grouped per prompt (so ``batch_num_images`` says
        which images share a prompt, and a multi-image prompt is not tiled, as in training)
        and ``pixel_values`` packed to each image's real views (:func:`pack_tiles`)."""
        batch = super().prepare_inputs(processor, images, texts, system)
        if "pixel_values" in batch:
            ip = processor.image_processor
            counts = tiles_per_image(
                batch["image_sizes"].tolist(),
                batch["batch_num_images"].tolist(),
                ip.image_grid_pinpoints,
                _tile_size(ip),
            )
            batch["pixel_values"] = pack_tiles(batch["pixel_values"], counts)
        return batch


def _tile_size(image_processor: Any) -> int:
    """The side of one view, as the image processor tiles (``crop_size``, else ``size``)."""
    for attr in ("crop_size", "size"):
        size = dict(getattr(image_processor, attr, None) or {})
        side = size.get("height") or size.get("shortest_edge")
        if side:
            return int(side)
    raise ValueError("the LLaVA-OneVision image processor has no size; cannot tell its tile side")
