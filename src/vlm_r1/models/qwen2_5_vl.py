"""Qwen2.5-VL: boxes in absolute pixels of the smart-resized input (multiples of 28).

Qwen2.5-VL was trained to ground in the coordinates of the image it actually sees
(Qwen2.5-VL technical report, arXiv 2502.13923, sec. 2.1 "native resolution"), so a box is only
meaningful together with the processor's resize (``image_grid_thw * patch_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_r1.models import boxes as box_math
from vlm_r1.models.adapter import TinyRecipe, VLMAdapter
from vlm_r1.models.chat_templates import (
    QWEN_IMAGE,
    QWEN_PLACEHOLDERS,
    QWEN_SPECIAL_TOKENS,
    QWEN_VIDEO,
    chatml,
)
from vlm_r1.models.registry import register_family


def mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies into (temporal, height, width) as Qwen does (16/24/24 of 64)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def qwen_image_processor_size(processor: Any) -> tuple[int, int, int]:
    """``(factor, min_pixels, max_pixels)`` of a Qwen image processor, whatever its version."""
    ip = processor.image_processor
    size = dict(getattr(ip, "size", None) or {})
    min_pixels = size.get("shortest_edge") or getattr(ip, "min_pixels", None) or 56 * 56
    max_pixels = size.get("longest_edge") or getattr(ip, "max_pixels", None) or 28 * 28 * 1280
    return int(ip.patch_size * ip.merge_size), int(min_pixels), int(max_pixels)


def qwen_model_input_size(processor: Any, image_size: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` after the Qwen processor's ``smart_resize`` of a ``(width, height)`` image."""
    factor, min_pixels, max_pixels = qwen_image_processor_size(processor)
    w, h = image_size
    rh, rw = box_math.smart_resize(h, w, factor, min_pixels, max_pixels)
    return rw, rh


@register_family
@dataclass
class Qwen25VLAdapter(VLMAdapter):
    family: str = "qwen2_5_vl"
    model_types: tuple[str, ...] = ("qwen2_5_vl",)
    coordinate_system: str = "abs_resized"
    vision_prefixes: tuple[str, ...] = ("model.visual", "visual")
    special_tokens: tuple[str, ...] = QWEN_SPECIAL_TOKENS
    placeholder_tokens: tuple[str, ...] = QWEN_PLACEHOLDERS
    chat_template: str = chatml(QWEN_IMAGE, QWEN_VIDEO, "You are a helpful assistant.")

    def model_input_size(self, processor: Any, image_size: tuple[int, int]) -> tuple[int, int]:
        return qwen_model_input_size(processor, image_size)

    def tiny_config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import Qwen2_5_VLConfig

        head_dim = recipe.hidden // recipe.heads
        return Qwen2_5_VLConfig(
            text_config=dict(
                vocab_size=recipe.vocab_size,
                hidden_size=recipe.hidden,
                intermediate_size=recipe.intermediate,
                num_hidden_layers=recipe.layers,
                num_attention_heads=recipe.heads,
                num_key_value_heads=recipe.kv_heads,
                max_position_embeddings=4096,
                max_window_layers=recipe.layers,
                rope_parameters={
                    "rope_type": "default",
                    "rope_theta": 10000.0,
                    "mrope_section": mrope_section(head_dim),
                },
                bos_token_id=token_ids["<|endoftext|>"],
                eos_token_id=token_ids["<|im_end|>"],
                pad_token_id=token_ids["<|endoftext|>"],
            ),
            vision_config=dict(
                depth=recipe.vision_depth,
                hidden_size=recipe.vision_hidden,
                intermediate_size=recipe.vision_intermediate,
                num_heads=recipe.vision_heads,
                out_hidden_size=recipe.hidden,
                fullatt_block_indexes=[recipe.vision_depth - 1],
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                window_size=112,
            ),
            image_token_id=token_ids["<|image_pad|>"],
            video_token_id=token_ids["<|video_pad|>"],
            vision_start_token_id=token_ids["<|vision_start|>"],
            vision_end_token_id=token_ids["<|vision_end|>"],
            tie_word_embeddings=False,
        )

    def tiny_processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        image_processor = Qwen2VLImageProcessor(
            min_pixels=recipe.min_pixels, max_pixels=recipe.max_pixels, patch_size=14, merge_size=2
        )
        video_processor = Qwen2VLVideoProcessor(patch_size=14, merge_size=2)
        return Qwen2_5_VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=self.chat_template,
        )
