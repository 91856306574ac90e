"""Qwen2.5-VL: boxes in absolute pixels of the smart-resized input (multiples of 28).

Qwen2.5-VL was trained to ground in the coordinates of the image it actually sees
(Qwen2.5-VL technical report, arXiv 2502.13923, sec. 2.1 "native resolution"), so a box is only
meaningful together with the processor's resize (``image_grid_thw * patch_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_r1.models.adapter import TinyRecipe
from vlm_r1.models.chat_templates import QWEN_IMAGE, QWEN_VIDEO, chatml
from vlm_r1.models.qwen_common import QwenVLAdapter, tiny_text_config, vision_token_ids
from vlm_r1.models.registry import register_family


@register_family
@dataclass
class Qwen25VLAdapter(QwenVLAdapter):
    family: str = "qwen2_5_vl"
    model_types: tuple[str, ...] = ("qwen2_5_vl",)
    coordinate_system: str = "abs_resized"
    chat_template: str = chatml(QWEN_IMAGE, QWEN_VIDEO, "You are a helpful assistant.")

    def tiny_config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import Qwen2_5_VLConfig

        return Qwen2_5_VLConfig(
            text_config=tiny_text_config(recipe, token_ids, max_window_layers=recipe.layers),
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
            **vision_token_ids(token_ids),
        )

    def tiny_processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        image_processor = Qwen2VLImageProcessor(
            min_pixels=recipe.min_pixels, max_pixels=recipe.max_pixels, patch_size=14, merge_size=2
        )
        return Qwen2_5_VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(patch_size=14, merge_size=2),
            chat_template=self.chat_template,
        )
