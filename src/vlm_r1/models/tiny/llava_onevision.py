"""Tiny LLaVA-OneVision checkpoints: the transformers-native ``llava_onevision`` config (SigLIP
vision tower, Qwen2 text model) and its real processor, with a small tile so tests stay fast.

Real checkpoints (``llava-hf/llava-onevision-qwen2-*-ov-hf``, per transformers'
``convert_llava_onevision_weights_to_hf.py``): SigLIP tiles of 384 px with patch 14 (729
tokens per view, ``num_image_tokens=729``), ``vision_feature_select_strategy="full"`` (SigLIP
has no CLS token), ``vision_feature_layer=-1``, ``anyres_max_9`` and pinpoint grids of 1x1 to
6x6 tiles. Here a tile is a quarter of the recipe's largest side (28 px for ``test``, 56 px for
``demo``: 4 or 16 tokens per view) and the grids are those of at most 2x2 tiles plus the 1x3
and 3x1 strips, so the AnyRes path (several tiles, unpadding to the aspect ratio, one newline
per feature row) runs on every non-square test image at a few dozen tokens per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vlm_r1.models.tiny.chat_templates import chatml
from vlm_r1.models.tiny.recipes import TinyRecipe, tiny_text_fields
from vlm_r1.models.tiny.registry import TinyBuilder, register_builder

PATCH = 14  # SigLIP-SO400M's patch size (real: 14)
#: Tile grids as (rows, columns); the real checkpoints use every grid up to 6x6.
GRIDS = ((1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1))


def tile_size(recipe: TinyRecipe) -> int:
    """A view's side: a quarter of the recipe's largest image side, a multiple of the patch."""
    side = math.isqrt(recipe.max_pixels) // 4
    return max(PATCH, side // PATCH * PATCH)


def grid_pinpoints(tile: int) -> list[list[int]]:
    """The candidate AnyRes resolutions, ``[height, width]`` px, as the config stores them."""
    return [[rows * tile, cols * tile] for rows, cols in GRIDS]


@register_builder
@dataclass
class LlavaOnevisionTinyBuilder(TinyBuilder):
    family: str = "llava_onevision"
    special_tokens: tuple[str, ...] = (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<image>",
        "<video>",
    )
    named_special_tokens: dict[str, str] = field(
        default_factory=lambda: {"image_token": "<image>", "video_token": "<video>"}
    )
    # The -hf template renders a turn's images, then its videos, then its text; the adapter
    # always puts images before the text, where ChatML in content order renders the same.
    chat_template: str = chatml("<image>\n", "<video>\n", None)

    def config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import LlavaOnevisionConfig

        tile = tile_size(recipe)
        return LlavaOnevisionConfig(
            vision_config=dict(
                model_type="siglip_vision_model",
                hidden_size=recipe.vision_hidden,
                num_hidden_layers=recipe.vision_depth,
                num_attention_heads=recipe.vision_heads,
                intermediate_size=recipe.vision_intermediate,
                image_size=tile,
                patch_size=PATCH,
                vision_use_head=False,
            ),
            text_config=dict(
                model_type="qwen2", tie_word_embeddings=False, **tiny_text_fields(recipe, token_ids)
            ),
            image_token_index=token_ids["<image>"],
            video_token_index=token_ids["<video>"],
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            vision_aspect_ratio="anyres_max_9",
            image_grid_pinpoints=grid_pinpoints(tile),
            tie_word_embeddings=False,
        )

    def processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import (
            LlavaOnevisionImageProcessor,
            LlavaOnevisionProcessor,
            LlavaOnevisionVideoProcessor,
        )

        tile = tile_size(recipe)
        image_processor = LlavaOnevisionImageProcessor(
            size={"height": tile, "width": tile}, image_grid_pinpoints=grid_pinpoints(tile)
        )
        video_processor = LlavaOnevisionVideoProcessor(size={"height": tile, "width": tile})
        return LlavaOnevisionProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            num_image_tokens=(tile // PATCH) ** 2,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
            chat_template=self.chat_template,
        )
