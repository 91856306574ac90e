"""Tiny Qwen-VL checkpoints (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): real config and processor
classes sized by a recipe, ChatML templates with Qwen's vision placeholders.

The three share a vocabulary of special tokens and the shape of the text config (multimodal
rotary sections); they differ in the vision tower's config keys, the patch size (14 vs 16) and
Qwen3-VL's learned position embeddings, which get sin-cos codes (``position_codes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_r1.models.tiny.chat_templates import QWEN_IMAGE, QWEN_VIDEO, chatml
from vlm_r1.models.tiny.position_codes import init_position_embedding
from vlm_r1.models.tiny.recipes import TinyRecipe, tiny_text_fields
from vlm_r1.models.tiny.registry import TinyBuilder, register_builder

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies into (temporal, height, width) as Qwen does (16/24/24 of 64)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_text_config(recipe: TinyRecipe, token_ids: dict[str, int], **extra: Any) -> dict[str, Any]:
    """The text-model part of a tiny Qwen-VL config (multimodal rotary sections included)."""
    head_dim = recipe.hidden // recipe.heads
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section(head_dim)}
    rope.update(extra.pop("rope", {}))
    return dict(**tiny_text_fields(recipe, token_ids), rope_parameters=rope, **extra)


def vision_token_ids(token_ids: dict[str, int]) -> dict[str, Any]:
    """Top-level config ids; Qwen's defaults assume its 151k vocabulary, so set them to ours."""
    return dict(
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def qwen2_processor(processor_class: Any, tokenizer: Any, recipe: TinyRecipe, template: str) -> Any:
    """A Qwen2-VL-style processor (patch 14, merge 2) of ``processor_class``."""
    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        min_pixels=recipe.min_pixels, max_pixels=recipe.max_pixels, patch_size=14, merge_size=2
    )
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(patch_size=14, merge_size=2),
        chat_template=template,
    )


@dataclass
class QwenTinyBuilder(TinyBuilder):
    special_tokens: tuple[str, ...] = QWEN_SPECIAL_TOKENS
    chat_template: str = chatml(QWEN_IMAGE, QWEN_VIDEO, "You are a helpful assistant.")


@register_builder
@dataclass
class Qwen2VLTinyBuilder(QwenTinyBuilder):
    family: str = "qwen2_vl"

    def config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
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

    def processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import Qwen2VLProcessor

        return qwen2_processor(Qwen2VLProcessor, tokenizer, recipe, self.chat_template)


@register_builder
@dataclass
class Qwen25VLTinyBuilder(QwenTinyBuilder):
    family: str = "qwen2_5_vl"

    def config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
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

    def processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import Qwen2_5_VLProcessor

        return qwen2_processor(Qwen2_5_VLProcessor, tokenizer, recipe, self.chat_template)


@register_builder
@dataclass
class Qwen3VLTinyBuilder(QwenTinyBuilder):
    family: str = "qwen3_vl"
    chat_template: str = chatml(QWEN_IMAGE, QWEN_VIDEO, None)

    def config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
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

    def processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
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

    def init_weights(self, model: Any) -> None:
        """Sin-cos position embeddings so a from-scratch tower can tell where things are."""
        visual = model.model.visual
        init_position_embedding(visual.pos_embed, visual.patch_embed.proj.weight)
