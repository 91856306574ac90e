"""Tiny GLM-4.1V checkpoints: transformers' ``Glm4vConfig`` / ``Glm4vProcessor`` sized by a
recipe, GLM's special tokens, and a chat template that formats prompts as the real checkpoint's.

What is kept from ``zai-org/GLM-4.1V-9B-Thinking``'s ``config.json``: half-rotary text attention
(``partial_rotary_factor`` 0.5) with the 3-D rotary frequencies split temporal : height : width
as 8 : 12 : 12 (here the nearest split of fewer frequencies), the vision merger's inner width
equal to the text MLP's (13696 in both there), patch 14, 2x2 merge, temporal patch 2. The
vision tower's learned position grid is 8x8 (real: 24x24 of a 336-pixel image), interpolated
to each image's grid by the model as for the real one, and starts from sin-cos codes
(``position_codes``) as Qwen3-VL's tiny tower does, so a tower trained from scratch can tell
where things are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_r1.models.tiny.position_codes import init_position_embedding
from vlm_r1.models.tiny.qwen import mrope_section
from vlm_r1.models.tiny.recipes import TinyRecipe
from vlm_r1.models.tiny.registry import TinyBuilder, register_builder

GLM4V_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
)

#: GLM-4.1V's chat format (see ``models/glm4v.py``): ``[gMASK]<sop>``, each turn
#: ``<|role|>`` + newline + content with no end token, images and videos as their
#: begin/placeholder/end triple, ``<|assistant|>`` + newline to generate.
GLM4V_CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif part['type'] == 'video' %}<|begin_of_video|><|video|><|end_of_video|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

#: Side of the vision tower's learned position grid (real: 336 / 14 = 24).
POSITION_GRID = 8


@register_builder
@dataclass
class Glm4vTinyBuilder(TinyBuilder):
    family: str = "glm4v"
    special_tokens: tuple[str, ...] = GLM4V_SPECIAL_TOKENS
    pad_token: str = "<|endoftext|>"
    chat_template: str = GLM4V_CHAT_TEMPLATE

    def config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import Glm4vConfig

        rotary_dim = recipe.hidden // recipe.heads // 2  # partial_rotary_factor 0.5
        return Glm4vConfig(
            text_config=dict(
                vocab_size=recipe.vocab_size,
                hidden_size=recipe.hidden,
                intermediate_size=recipe.intermediate,
                num_hidden_layers=recipe.layers,
                num_attention_heads=recipe.heads,
                num_key_value_heads=recipe.kv_heads,
                max_position_embeddings=4096,
                pad_token_id=token_ids["<|endoftext|>"],
                eos_token_id=[
                    token_ids[t] for t in ("<|endoftext|>", "<|user|>", "<|observation|>")
                ],
                rope_parameters={
                    "rope_type": "default",
                    "rope_theta": 10000.0,
                    "partial_rotary_factor": 0.5,
                    "mrope_section": mrope_section(rotary_dim),
                },
            ),
            vision_config=dict(
                depth=recipe.vision_depth,
                hidden_size=recipe.vision_hidden,
                num_heads=recipe.vision_heads,
                out_hidden_size=recipe.hidden,
                intermediate_size=recipe.intermediate,
                image_size=POSITION_GRID * 14,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
            ),
            image_token_id=token_ids["<|image|>"],
            video_token_id=token_ids["<|video|>"],
            image_start_token_id=token_ids["<|begin_of_image|>"],
            image_end_token_id=token_ids["<|end_of_image|>"],
            video_start_token_id=token_ids["<|begin_of_video|>"],
            video_end_token_id=token_ids["<|end_of_video|>"],
            tie_word_embeddings=False,
        )

    def processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import Glm4vImageProcessor, Glm4vProcessor
        from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor

        # The processor's pixel bounds count 2 temporal frames (``glm4v_resize``): twice the
        # recipe's area bounds give the same image sizes (and token counts) as the Qwen tinies.
        size = {"shortest_edge": 2 * recipe.min_pixels, "longest_edge": 2 * recipe.max_pixels}
        return Glm4vProcessor(
            image_processor=Glm4vImageProcessor(
                size=size, patch_size=14, merge_size=2, temporal_patch_size=2
            ),
            tokenizer=tokenizer,
            video_processor=Glm4vVideoProcessor(patch_size=14, merge_size=2),
            chat_template=self.chat_template,
        )

    def init_weights(self, model: Any) -> None:
        """Sin-cos codes in the vision tower's learned position grid (see ``position_codes``)."""
        visual = model.model.visual
        init_position_embedding(
            visual.embeddings.position_embedding, visual.patch_embed.proj.weight
        )
