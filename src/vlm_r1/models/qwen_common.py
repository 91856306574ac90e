"""What the Qwen-VL families (2, 2.5, 3) share: vision placeholder tokens, the vision tower
under ``model.visual`` and ``smart_resize`` preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlm_r1.models import boxes as box_math
from vlm_r1.models.adapter import VLMAdapter

#: The tokens an image or video becomes in the prompt; generating one would break the next forward.
QWEN_PLACEHOLDERS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def qwen_image_processor_size(processor: Any) -> tuple[int, int, int]:
    """``(factor, min_pixels, max_pixels)`` of a Qwen image processor, whatever its version."""
    ip = processor.image_processor
    size = dict(getattr(ip, "size", None) or {})
    min_pixels = size.get("shortest_edge") or getattr(ip, "min_pixels", None) or 56 * 56
    max_pixels = size.get("longest_edge") or getattr(ip, "max_pixels", None) or 28 * 28 * 1280
    return int(ip.patch_size * ip.merge_size), int(min_pixels), int(max_pixels)


@dataclass
class QwenVLAdapter(VLMAdapter):
    vision_prefixes: tuple[str, ...] = ("model.visual", "visual")
    placeholder_tokens: tuple[str, ...] = QWEN_PLACEHOLDERS
    encoder_inputs: tuple[str, ...] = ("pixel_values", "image_grid_thw")

    def encoder_units(self, features: dict[str, Any]) -> int:
        """One encoder-output entry per image: the rows of ``image_grid_thw``."""
        return int(features["image_grid_thw"].shape[0]) if "image_grid_thw" in features else 0

    def reset_positions(self, model: torch.nn.Module) -> None:
        """Qwen caches its 3-D rotary offsets (``rope_deltas``) on the model; a prefix forward
        must compute fresh ones rather than read a previous batch's."""
        inner = _inner_model(model)
        if hasattr(inner, "rope_deltas"):
            inner.rope_deltas = None

    def continuation_positions(
        self, model: torch.nn.Module, attention_mask: torch.Tensor, prefix_length: int, rows: Any
    ) -> torch.Tensor | None:
        """M-RoPE positions of text that continues a prefix, as in the full sequence: (index
        among attended tokens) + the prefix's ``rope_deltas``, the same on all 3 axes."""
        deltas = getattr(_inner_model(model), "rope_deltas", None)  # set by the prefix forward
        if deltas is None:  # text-only prefix: the model's own positions are right
            return None
        text = (attention_mask.long().cumsum(-1) - 1)[:, prefix_length:]
        return (text + deltas.to(attention_mask.device)[rows]).unsqueeze(0).expand(3, -1, -1)

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


def _inner_model(model: torch.nn.Module) -> torch.nn.Module:
    """The ``...Model`` under wrappers (DDP ``module``, PEFT ``base_model.model``) and the head:
    where Qwen keeps ``rope_deltas``."""
    while hasattr(model, "module"):
        model = model.module
    get_base = getattr(model, "get_base_model", None)
    if get_base is not None:
        model = get_base()
    return getattr(model, "model", model)
