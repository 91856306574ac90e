"""InternVL (2.5 / 3, transformers-native ``internvl`` model type).

Boxes: InternVL grounds with ``<ref>name</ref><box>[[x1, y1, x2, y2]]</box>`` where coordinates
are normalised to 0-1000 of the image (InternVL2 documentation, "Grounding" and the InternVL2.5
report, arXiv 2412.05271, sec. 4 data formats). VLM-R1's JSON answer format is used in prompts;
only the coordinate system differs from Qwen2.5-VL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlm_r1.models.adapter import TinyRecipe, VLMAdapter, tiny_text_fields
from vlm_r1.models.chat_templates import chatml
from vlm_r1.models.registry import register_family

TINY_TILE = (
    56  # tiny tile size (real: 448); 56 / patch 14 = 4x4 patches -> 4 tokens after pixel shuffle
)


@register_family
@dataclass
class InternVLAdapter(VLMAdapter):
    family: str = "internvl"
    model_types: tuple[str, ...] = ("internvl",)
    coordinate_system: str = "norm1000"
    vision_prefixes: tuple[str, ...] = (
        "model.vision_tower",
        "model.multi_modal_projector",
        "vision_tower",
        "multi_modal_projector",
    )
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
    placeholder_tokens: tuple[str, ...] = ("<img>", "</img>", "<IMG_CONTEXT>", "<video>")
    named_special_tokens: dict[str, str] = field(
        default_factory=lambda: {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        }
    )
    chat_template: str = chatml("<IMG_CONTEXT>\n", "<video>\n", None)

    def tiny_config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
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

    def tiny_processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
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
