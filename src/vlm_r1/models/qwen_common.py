"""What the Qwen-VL families (2, 2.5, 3) share: ChatML with vision placeholders, the vision
tower under ``model.visual``, ``smart_resize`` preprocessing, and the shape of their configs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_r1.models import boxes as box_math
from vlm_r1.models.adapter import TinyRecipe, VLMAdapter, tiny_text_fields
from vlm_r1.models.chat_templates import QWEN_PLACEHOLDERS, QWEN_SPECIAL_TOKENS


def mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies into (temporal, height, width) as Qwen does (16/24/24 of 64)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def qwen_image_processor_size(processor: Any) -> tuple[int, int, int]:
    """``(factor, min_pixels, max_pixels)`` of a Qwen image processor, whatever its version."""
    ip = processor.image_processor
    size = dict(getattr(ip, "size", None) or {})
    min_pixels = size.get("shortest_edge") or getattr(ip, "min_pixels", None) or 56 * 56
    max_pixels = size.get("longest_edge") or getattr(ip, "max_pixels", None) or 28 * 28 * 1280
    return int(ip.patch_size * ip.merge_size), int(min_pixels), int(max_pixels)


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


@dataclass
class QwenVLAdapter(VLMAdapter):
    vision_prefixes: tuple[str, ...] = ("model.visual", "visual")
    special_tokens: tuple[str, ...] = QWEN_SPECIAL_TOKENS
    placeholder_tokens: tuple[str, ...] = QWEN_PLACEHOLDERS

    def set_pixel_bounds(
        self, processor: Any, min_pixels: int | None, max_pixels: int | None
    ) -> None:
        """Set the image processor's ``size`` bounds (the non-deprecated form of min/max_pixels)."""
        ip = processor.image_processor
        size = dict(getattr(ip, "size", None) or {})
        if min_pixels is not None:
            size["shortest_edge"] = int(min_pixels)
        if max_pixels is not None:
            size["longest_edge"] = int(max_pixels)
        if size.get("shortest_edge", 0) > size.get("longest_edge", float("inf")):
            raise ValueError(
                f"min_pixels {size['shortest_edge']} exceeds max_pixels {size['longest_edge']}"
            )
        ip.size = size
        for name in ("min_pixels", "max_pixels"):
            if hasattr(ip, name):
                setattr(ip, name, size["shortest_edge" if name == "min_pixels" else "longest_edge"])

    def model_input_size(self, processor: Any, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` after the processor's ``smart_resize``."""
        factor, min_pixels, max_pixels = qwen_image_processor_size(processor)
        w, h = image_size
        rh, rw = box_math.smart_resize(h, w, factor, min_pixels, max_pixels)
        return rw, rh
