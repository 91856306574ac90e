"""Tiny SmolVLM checkpoints: the real ``SmolVLMConfig`` (SigLIP-style vision, pixel-shuffle
connector, Llama text model) and the real ``SmolVLMProcessor``, at a 64-pixel tile (real: 384 in
SmolVLM2-2.2B, 512 in SmolVLM-256M/500M).

Image splitting stays on, so every test goes through the tiling path the hub checkpoints use:
``size["longest_edge"]`` is a multiple of the tile (two tiles for the ``test`` size), an image
becomes up to 2 x 2 tiles plus the global image, each 64 / 16 = 4 x 4 patches, pixel-shuffled by
2 into 4 ``<image>`` tokens: at most 20 image tokens per image.

Tokens and template follow the hub checkpoints (their ``tokenizer_config.json`` and
``chat_template.json``; transformers' ``SmolVLMProcessor`` tests use the same template):
``<|im_start|>`` opens the conversation, ``<end_of_utterance>`` ends a turn and is the EOS,
``<|im_end|>`` pads, and ``<fake_token_around_image>``, ``<image>``, ``<global-img>`` and the
``<row_i_col_j>`` tile markers (a 6 x 6 grid, as ``Idefics3Processor`` expects) are special.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vlm_r1.models.smolvlm import TILE_MARKERS
from vlm_r1.models.tiny.recipes import TinyRecipe, tiny_text_fields
from vlm_r1.models.tiny.registry import TinyBuilder, register_builder

TILE = 64  # tiny tile and vision image size (real: 384 or 512)
PATCH = 16  # vision patch size (real: 14 in SmolVLM2-2.2B, 16 in the 256M/500M models)
SCALE = 2  # connector pixel-shuffle factor (real: 3 or 4)
#: ``<image>`` tokens per tile: (TILE / PATCH)^2 patches, SCALE^2 of them per token.
IMAGE_SEQ_LEN = (TILE // PATCH) ** 2 // SCALE**2


def smolvlm_chat_template() -> str:
    """SmolVLM's chat template (Jinja), equivalent to the hub checkpoints': one ``<|im_start|>``
    opens the conversation; each turn is ``Role:`` (``Role: `` when it starts with text), its
    parts (an image as ``<image>``, which the processor expands into tiles) and
    ``<end_of_utterance>\\n``; the generation prompt is ``Assistant:``."""
    return (
        "<|im_start|>{% for message in messages %}"
        "{{ message['role'] | capitalize }}"
        "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
        "{% else %}"
        "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
        "{% for part in message['content'] %}"
        "{% if part['type'] == 'text' %}{{ part['text'] }}"
        "{% elif part['type'] == 'image' %}{{ '<image>' }}"
        "{% elif part['type'] == 'video' %}{{ '<video>' }}"
        "{% endif %}{% endfor %}{% endif %}"
        "<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    )


def longest_edge(recipe: TinyRecipe) -> int:
    """The processor's ``size["longest_edge"]``: the recipe's pixel budget as a side length,
    rounded up to whole tiles (``test``: 112 -> 128, two tiles; ``demo``: 224 -> 256, four)."""
    return max(2, math.ceil(math.isqrt(recipe.max_pixels) / TILE)) * TILE


@register_builder
@dataclass
class SmolVLMTinyBuilder(TinyBuilder):
    family: str = "smolvlm"
    special_tokens: tuple[str, ...] = (
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<end_of_utterance>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        *TILE_MARKERS,
    )
    named_special_tokens: dict[str, str] = field(
        default_factory=lambda: {
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        }
    )
    pad_token: str = "<|im_end|>"
    chat_template: str = field(default_factory=smolvlm_chat_template)

    def config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import SmolVLMConfig

        text = {
            **tiny_text_fields(recipe, token_ids),
            "bos_token_id": token_ids["<|im_start|>"],
            "eos_token_id": token_ids["<end_of_utterance>"],
            "pad_token_id": token_ids[self.pad_token],
        }
        return SmolVLMConfig(
            vision_config=dict(
                hidden_size=recipe.vision_hidden,
                num_hidden_layers=recipe.vision_depth,
                num_attention_heads=recipe.vision_heads,
                intermediate_size=recipe.vision_intermediate,
                image_size=TILE,
                patch_size=PATCH,
            ),
            text_config=dict(model_type="llama", tie_word_embeddings=False, **text),
            scale_factor=SCALE,
            image_token_id=token_ids["<image>"],
            pad_token_id=token_ids[self.pad_token],
            tie_word_embeddings=False,
        )

    def processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import SmolVLMImageProcessor, SmolVLMProcessor
        from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

        edge = longest_edge(recipe)
        image_processor = SmolVLMImageProcessor(
            do_image_splitting=True,
            size={"longest_edge": edge},
            max_image_size={"longest_edge": TILE},
        )
        video_processor = SmolVLMVideoProcessor(
            size={"longest_edge": TILE}, max_image_size={"longest_edge": TILE}
        )
        return SmolVLMProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            image_seq_len=IMAGE_SEQ_LEN,
            chat_template=self.chat_template,
        )
