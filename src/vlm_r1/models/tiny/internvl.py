"""Tiny InternVL checkpoints: the transformers-native ``internvl`` config and processor with a
56-pixel tile (real: 448), a Qwen2 text model and a ChatML template with InternVL's image tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlm_r1.models.tiny.chat_templates import chatml
from vlm_r1.models.tiny.recipes import TinyRecipe, tiny_text_fields
from vlm_r1.models.tiny.registry import TinyBuilder, register_builder

TINY_TILE = (
    56  # tiny tile size (real: 448); 56 / patch 14 = 4x4 patches -> 4 tokens after pixel shuffle
)


@register_builder
@dataclass
class InternVLTinyBuilder(TinyBuilder):
    family: str = "internvl"
    special_tokens: tuple[str, ...] = (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<img>",
        "</img>",
        "<IMG_CONTEXT>",
        "<video>",
        "<ref>",
        "</ref>",
        "<box>",
        "</box>",
    )
    named_special_tokens: dict[str, str] = field(
        default_factory=lambda: {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        }
    )
    chat_template: str = chatml("<IMG_CONTEXT>\n", "<video>\n", None)

    def config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import InternVLConfig

        return InternVLConfig(
            vision_config=dict(
                hidden_size=recipe.vision_hidden,
                num_hidden_layers=recipe.vision_depth,
                num_attention_heads=recipe.vision_heads,
                intermediate_size=recipe.vision_intermediate,
                image_size=[TINY_TILE, TINY_TILE],
                patch_size=[14, 14],
            ),
            text_config=dict(
                model_type="qwen2", tie_word_embeddings=False, **tiny_text_fields(recipe, token_ids)
            ),
            image_token_id=token_ids["<IMG_CONTEXT>"],
            image_seq_length=(TINY_TILE // 14) ** 2 // 4,
            downsample_ratio=0.5,
            tie_word_embeddings=False,
        )

    def processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import GotOcr2ImageProcessor, InternVLProcessor
        from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

        image_processor = GotOcr2ImageProcessor(
            size={"height": TINY_TILE, "width": TINY_TILE},
            crop_to_patches=True,
            min_patches=1,
            max_patches=4,
        )
        video_processor = InternVLVideoProcessor(size={"height": TINY_TILE, "width": TINY_TILE})
        return InternVLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            image_seq_length=(TINY_TILE // 14) ** 2 // 4,
            chat_template=self.chat_template,
        )
