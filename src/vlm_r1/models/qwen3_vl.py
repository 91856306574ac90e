"""Qwen3-VL: boxes normalised to 0-1000 (Qwen3-VL model card, "2D grounding": relative
coordinates on a 0-1000 scale); vision patch 16, so inputs are resized to multiples of 32."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_r1.models.adapter import TinyRecipe
from vlm_r1.models.chat_templates import QWEN_IMAGE, QWEN_VIDEO, chatml
from vlm_r1.models.position_codes import init_position_embedding
from vlm_r1.models.qwen_common import QwenVLAdapter, tiny_text_config, vision_token_ids
from vlm_r1.models.registry import register_family


@register_family
@dataclass
class Qwen3VLAdapter(QwenVLAdapter):
    family: str = "qwen3_vl"
    model_types: tuple[str, ...] = ("qwen3_vl",)
    coordinate_system: str = "norm1000"
    chat_template: str = chatml(QWEN_IMAGE, QWEN_VIDEO, None)

    def tiny_config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import Qwen3VLConfig

        return Qwen3VLConfig(
            text_config=tiny_text_config(
                recipe,
                token_ids,
                head_dim=recipe.hidden // recipe.heads,
                rope={"mrope_interleaved": True},
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
            **vision_token_ids(token_ids),
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
        return Qwen3VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2),
            chat_template=self.chat_template,
        )

    def init_tiny_weights(self, model: Any) -> None:
        """Sin-cos position embeddings so a from-scratch tower can tell where things are."""
        visual = model.model.visual
        init_position_embedding(visual.pos_embed, visual.patch_embed.proj.weight)
