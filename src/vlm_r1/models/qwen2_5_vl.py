"""Qwen2.5-VL: boxes in absolute pixels of the smart-resized input (multiples of 28).

Qwen2.5-VL was trained to ground in the coordinates of the image it actually sees
(Qwen2.5-VL technical report, arXiv 2502.13923, sec. 2.1 "native resolution"), so a box is only
meaningful together with the processor's resize (``image_grid_thw * patch_size``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlm_r1.models.qwen_common import QwenVLAdapter
from vlm_r1.models.registry import register_family


@register_family
@dataclass
class Qwen25VLAdapter(QwenVLAdapter):
    family: str = "qwen2_5_vl"
    model_types: tuple[str, ...] = ("qwen2_5_vl",)
    coordinate_system: str = "abs_resized"
