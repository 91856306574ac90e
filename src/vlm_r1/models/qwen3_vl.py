"""Qwen3-VL: boxes normalised to 0-1000 (Qwen3-VL model card, "2D grounding": relative
coordinates on a 0-1000 scale); vision patch 16, so inputs are resized to multiples of 32."""

from __future__ import annotations

from dataclasses import dataclass

from vlm_r1.models.qwen_common import QwenVLAdapter
from vlm_r1.models.registry import register_family


@register_family
@dataclass
class Qwen3VLAdapter(QwenVLAdapter):
    family: str = "qwen3_vl"
    model_types: tuple[str, ...] = ("qwen3_vl",)
    coordinate_system: str = "norm1000"
