"""Sizes of the tiny checkpoints, and the text-model config fields every family derives from one.

A recipe is part of the cache key (``build.tiny_checkpoint``), so changing a size here rebuilds
the cached checkpoints of that size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TinyRecipe:
    """Sizes of a tiny random-weight checkpoint."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vision_intermediate: int
    vocab_size: int
    min_pixels: int
    max_pixels: int


TINY_SIZES: dict[str, TinyRecipe] = {
    # ~1M parameters: every code path, seconds to build.
    "test": TinyRecipe(
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        intermediate=128,
        vision_hidden=32,
        vision_depth=2,
        vision_heads=2,
        vision_intermediate=64,
        vocab_size=1024,
        min_pixels=28 * 28 * 4,
        max_pixels=112 * 112,
    ),
    # A few million parameters: learns the synthetic grounding task on CPU in minutes.
    "demo": TinyRecipe(
        hidden=256,
        layers=4,
        heads=4,
        kv_heads=2,
        intermediate=768,
        vision_hidden=128,
        vision_depth=4,
        vision_heads=4,
        vision_intermediate=384,
        vocab_size=2048,
        min_pixels=28 * 28 * 4,
        max_pixels=224 * 224,
    ),
}


def tiny_text_fields(recipe: TinyRecipe, token_ids: dict[str, int]) -> dict[str, Any]:
    """Text-model config fields every tiny family shares (ChatML special tokens as bos/eos/pad)."""
    return dict(
        vocab_size=recipe.vocab_size,
        hidden_size=recipe.hidden,
        intermediate_size=recipe.intermediate,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.kv_heads,
        max_position_embeddings=4096,
        bos_token_id=token_ids["<|endoftext|>"],
        eos_token_id=token_ids["<|im_end|>"],
        pad_token_id=token_ids["<|endoftext|>"],
    )
