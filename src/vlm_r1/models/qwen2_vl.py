"""Qwen2-VL: boxes normalised to 0-1000 (Qwen2-VL paper, arXiv 2409.12191, sec. 2.2
"visual grounding": coordinates normalised within [0, 1000) as (x1, y1), (x2, y2))."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_r1.models.adapter import TinyRecipe
from vlm_r1.models.chat_templates import QWEN_IMAGE, QWEN_VIDEO, chatml
from vlm_r1.models.qwen_common import QwenVLAdapter, tiny_text_config, vision_token_ids
from vlm_r1.models.registry import register_family


@register_family
@dataclass
class Qwen2VLAdapter(QwenVLAdapter):
    family: str = "qwen2_vl"
    model_types: tuple[str, ...] = ("qwen2_vl",)
    coordinate_system: str = "norm1000"
    chat_template: str = chatml(QWEN_IMAGE, QWEN_VIDEO, "You are a helpful assistant.")

    def tiny_config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import Qwen2VLConfig

        return Qwen2VLConfig(
            text_config=tiny_text_config(recipe, token_ids, max_window_layers=recipe.layers),
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
            **vision_token_ids(token_ids),
        )

    def tiny_processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        image_processor = Qwen2VLImageProcessor(
            min_pixels=recipe.min_pixels, max_pixels=recipe.max_pixels, patch_size=14, merge_size=2
        )
        return Qwen2VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(patch_size=14, merge_size=2),
            chat_template=self.chat_template,
        )
