"""Qwen3-VL: boxes normalised to 0-1000 (Qwen3-VL model card, "2D grounding": relative
coordinates on a 0-1000 scale); vision patch 16, so inputs are resized to multiples of 32."""

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
class Qwen3VLAdapter(VLMAdapter):
    family: str = "qwen3_vl"
    model_types: tuple[str, ...] = ("qwen3_vl",)
    coordinate_system: str = "norm1000"
    vision_prefixes: tuple[str, ...] = ("model.visual", "visual")
    special_tokens: tuple[str, ...] = QWEN_SPECIAL_TOKENS
    placeholder_tokens: tuple[str, ...] = QWEN_PLACEHOLDERS
    chat_template: str = chatml(QWEN_IMAGE, QWEN_VIDEO, None)

    def model_input_size(self, processor: Any, image_size: tuple[int, int]) -> tuple[int, int]:
        return qwen_model_input_size(processor, image_size)

    def tiny_config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import Qwen3VLConfig

        head_dim = recipe.hidden // recipe.heads
        return Qwen3VLConfig(
            text_config=dict(
                vocab_size=recipe.vocab_size,
                hidden_size=recipe.hidden,
                intermediate_size=recipe.intermediate,
                num_hidden_layers=recipe.layers,
                num_attention_heads=recipe.heads,
                num_key_value_heads=recipe.kv_heads,
                head_dim=head_dim,
                max_position_embeddings=4096,
                rope_parameters={
                    "rope_type": "default",
                    "rope_theta": 10000.0,
                    "mrope_section": mrope_section(head_dim),
                    "mrope_interleaved": True,
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
                patch_size=16,
                spatial_merge_size=2,
                temporal_patch_size=2,
                num_position_embeddings=256,
                deepstack_visual_indexes=[0],
            ),
            image_token_id=token_ids["<|image_pad|>"],
            video_token_id=token_ids["<|video_pad|>"],
            vision_start_token_id=token_ids["<|vision_start|>"],
            vision_end_token_id=token_ids["<|vision_end|>"],
            tie_word_embeddings=False,
        )

    def tiny_processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

        # Qwen3-VL: patch 16 x merge 2 -> multiples of 32; pixel bounds scale with (32/28)^2.
        scale = (32 / 28) ** 2
        image_processor = Qwen2VLImageProcessor(
            min_pixels=int(recipe.min_pixels * scale),
            max_pixels=int(recipe.max_pixels * scale),
            patch_size=16,
            merge_size=2,
        )
        video_processor = Qwen3VLVideoProcessor(patch_size=16, merge_size=2)
        return Qwen3VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=self.chat_template,
        )
