"""Qwen2-VL: boxes normalised to 0-1000 (Qwen2-VL paper, arXiv 2409.12191, sec. 2.2
"visual grounding": coordinates normalised within [0, 1000) as (x1, y1), (x2, y2))."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_r1.models.adapter import TinyRecipe, VLMAdapter
from vlm_r1.models.chat_templates import (
    QWEN_IMAGE,
    QWEN_PLACEHOLDERS,
    QWEN_SPECIAL_TOKENS,
    QWEN_VIDEO,
    chatml,
)
from vlm_r1.models.qwen2_5_vl import mrope_section, qwen_model_input_size
from vlm_r1.models.registry import register_family


@register_family
@dataclass
class Qwen2VLAdapter(VLMAdapter):
    family: str = "qwen2_vl"
    model_types: tuple[str, ...] = ("qwen2_vl",)
    coordinate_system: str = "norm1000"
    vision_prefixes: tuple[str, ...] = ("model.visual", "visual")
    special_tokens: tuple[str, ...] = QWEN_SPECIAL_TOKENS
    placeholder_tokens: tuple[str, ...] = QWEN_PLACEHOLDERS
    chat_template: str = chatml(QWEN_IMAGE, QWEN_VIDEO, "You are a helpful assistant.")

    def model_input_size(self, processor: Any, image_size: tuple[int, int]) -> tuple[int, int]:
        return qwen_model_input_size(processor, image_size)

    def tiny_config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import Qwen2VLConfig

        head_dim = recipe.hidden // recipe.heads
        return Qwen2VLConfig(
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
                embed_dim=recipe.vision_hidden,
                hidden_size=recipe.hidden,
                mlp_ratio=recipe.vision_intermediate // recipe.vision_hidden,
                num_heads=recipe.vision_heads,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
            ),
            image_token_id=token_ids["<|image_pad|>"],
            video_token_id=token_ids["<|video_pad|>"],
            vision_start_token_id=token_ids["<|vision_start|>"],
            vision_end_token_id=token_ids["<|vision_end|>"],
            tie_word_embeddings=False,
        )

    def tiny_processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        image_processor = Qwen2VLImageProcessor(
            min_pixels=recipe.min_pixels, max_pixels=recipe.max_pixels, patch_size=14, merge_size=2
        )
        video_processor = Qwen2VLVideoProcessor(patch_size=14, merge_size=2)
        return Qwen2VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=self.chat_template,
        )
