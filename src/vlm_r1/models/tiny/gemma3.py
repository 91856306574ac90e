"""Tiny Gemma 3 checkpoints: the transformers-native ``gemma3`` config (SigLIP vision tower,
average-pooling projector, Gemma 3 text model) and ``Gemma3Processor``, sized by a recipe.

What is kept from ``google/gemma-3-4b-it`` (its ``config.json``, ``preprocessor_config.json``
and ``tokenizer_config.json``; Gemma 3 report, arXiv 2503.19786, sec. 2):

- the image is resized to one fixed square (896 real; here the side of the recipe's
  ``max_pixels``: 112 for "test", 224 for "demo"), mean/std 0.5, patch 14, no pan-and-scan
  (its default is off, and a crop count that varies per image would change the number of
  placeholder runs per image: kept off, as VLM-R1-style training of Gemma 3 does);
- the projector average-pools the patch grid by 2 per side (real: 64x64 patches -> 16x16 =
  256 tokens, pool 4), giving 16 tokens per image for "test" and 64 for "demo";
- local (sliding-window) and global attention layers, the window four times an image's token
  count as in the real model (1024 = 4 x 256), so a "test" prompt is longer than the window and
  the sliding-window masks and caches are exercised. Real: 5 local layers per global one; with
  2-4 layers the tiny model alternates local/global so both kinds are present;
- rotary bases 10k (local) / 1M (global, linear scaling x8), ``query_pre_attn_scalar`` = head
  dim, no logit soft-capping (both ``null`` in the real config: Gemma 3 replaced Gemma 2's
  soft-capping with QK-norm), tied input/output embeddings;
- the special tokens at Gemma's own small ids (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2) and a
  tokenizer that prepends ``<bos>`` when asked for special tokens, as Gemma's does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vlm_r1.models.tiny.chat_templates import gemma3_template
from vlm_r1.models.tiny.recipes import TinyRecipe
from vlm_r1.models.tiny.registry import TinyBuilder, register_builder

PATCH = 14  # SigLIP patch size of every Gemma 3 checkpoint (vision_config.patch_size)
POOL = 2  # projector average-pool kernel per side (real: 4, 64x64 patches -> 16x16 tokens)
WINDOW_PER_IMAGE = 4  # sliding window / image tokens, as in gemma-3-4b-it (1024 / 256)

BOS, EOS, PAD = "<bos>", "<eos>", "<pad>"
START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"
BOI, EOI, IMAGE = "<start_of_image>", "<end_of_image>", "<image_soft_token>"


def image_side(recipe: TinyRecipe) -> int:
    """The square side images are resized to: the largest multiple of ``PATCH * POOL`` whose
    area fits the recipe's ``max_pixels`` (112 for "test", 224 for "demo")."""
    step = PATCH * POOL
    return max(step, math.isqrt(recipe.max_pixels) // step * step)


def image_tokens(recipe: TinyRecipe) -> int:
    """Soft tokens per image after the projector's pooling (``mm_tokens_per_image``)."""
    return (image_side(recipe) // PATCH // POOL) ** 2


def layer_types(layers: int) -> list[str]:
    """Local and global layers alternating, ending on a global one when the count is even."""
    return ["full_attention" if i % 2 else "sliding_attention" for i in range(layers)]


def add_bos_post_processor(tokenizer: Any) -> None:
    """Make ``tokenizer`` prepend ``<bos>`` when special tokens are requested (Gemma's
    ``add_bos_token=True``), so a chat string that already starts with ``<bos>`` gets two unless
    the caller passes ``add_special_tokens=False``, exactly as with the real tokenizer."""
    from tokenizers import processors

    bos_id = tokenizer.convert_tokens_to_ids(BOS)
    tokenizer.bos_token = BOS
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )


@register_builder
@dataclass
class Gemma3TinyBuilder(TinyBuilder):
    family: str = "gemma3"
    # Gemma's order first (pad 0, eos 1, bos 2), then the turn and image markers.
    special_tokens: tuple[str, ...] = (
        PAD,
        EOS,
        BOS,
        START_OF_TURN,
        END_OF_TURN,
        BOI,
        EOI,
        IMAGE,
    )
    # Gemma3Processor reads tokenizer.boi_token / eoi_token / image_token (and their ids).
    named_special_tokens: dict[str, str] = field(
        default_factory=lambda: {"boi_token": BOI, "eoi_token": EOI, "image_token": IMAGE}
    )
    pad_token: str = PAD
    chat_template: str = field(default_factory=gemma3_template)

    def config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        from transformers import Gemma3Config

        head_dim = recipe.hidden // recipe.heads
        tokens = image_tokens(recipe)
        return Gemma3Config(
            vision_config=dict(
                model_type="siglip_vision_model",
                hidden_size=recipe.vision_hidden,
                intermediate_size=recipe.vision_intermediate,
                num_hidden_layers=recipe.vision_depth,
                num_attention_heads=recipe.vision_heads,
                image_size=image_side(recipe),
                patch_size=PATCH,
                vision_use_head=False,
            ),
            text_config=dict(
                model_type="gemma3_text",
                vocab_size=recipe.vocab_size,
                hidden_size=recipe.hidden,
                intermediate_size=recipe.intermediate,
                num_hidden_layers=recipe.layers,
                num_attention_heads=recipe.heads,
                num_key_value_heads=recipe.kv_heads,
                head_dim=head_dim,
                query_pre_attn_scalar=head_dim,
                sliding_window=WINDOW_PER_IMAGE * tokens,
                layer_types=layer_types(recipe.layers),
                rope_parameters={
                    "full_attention": {
                        "rope_type": "linear",
                        "factor": 8.0,
                        "rope_theta": 1_000_000.0,
                    },
                    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                },
                final_logit_softcapping=None,
                attn_logit_softcapping=None,
                max_position_embeddings=4096,
                bos_token_id=token_ids[BOS],
                eos_token_id=token_ids[EOS],
                pad_token_id=token_ids[PAD],
                tie_word_embeddings=True,
            ),
            mm_tokens_per_image=tokens,
            boi_token_index=token_ids[BOI],
            eoi_token_index=token_ids[EOI],
            image_token_index=token_ids[IMAGE],
            tie_word_embeddings=True,
        )

    def init_weights(self, model: Any) -> None:
        """Give the projector random weights: transformers initialises
        ``mm_input_projection_weight`` to zeros (``Gemma3PreTrainedModel._init_weights``), which
        would make a from-scratch model blind (every image feature 0, no gradient reaching the
        vision tower). The scale makes image features as large as the sqrt(hidden)-scaled text
        embeddings: the RMS-normed vision output (RMS 1 over ``v`` dims) times a ``v x h``
        matrix of std ``s`` has std ``s * sqrt(v)``, text embeddings ``0.02 * sqrt(h)``."""
        import torch

        config = model.config
        weight = model.model.multi_modal_projector.mm_input_projection_weight
        v, h = config.vision_config.hidden_size, config.text_config.hidden_size
        with torch.no_grad():
            weight.normal_(0.0, config.text_config.initializer_range * math.sqrt(h / v))

    def processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        from transformers import Gemma3ImageProcessor, Gemma3Processor

        add_bos_post_processor(tokenizer)
        side = image_side(recipe)
        image_processor = Gemma3ImageProcessor(
            size={"height": side, "width": side},
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
            do_pan_and_scan=False,
        )
        return Gemma3Processor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            chat_template=self.chat_template,
            image_seq_length=image_tokens(recipe),
        )
