"""Qwen2-VL: boxes normalised to 0-1000 (Qwen2-VL paper, arXiv 2409.12191, sec. 2.2
"visual grounding": coordinates normalised within [0, 1000) as (x1, y1), (x2, y2))."""

from __future__ import annotations

from dataclasses import dataclass

from vlm_r1.models.qwen_common import QwenVLAdapter
from vlm_r1.models.registry import register_family


@register_family
@dataclass
class Qwen2VLAdapter(QwenVLAdapter):
    family: str = "qwen2_vl"
    model_types: tuple[str, ...] = ("qwen2_vl",)
    coordinate_system: str = "norm1000"
