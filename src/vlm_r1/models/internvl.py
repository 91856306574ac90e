"""InternVL (2.5 / 3, transformers-native ``internvl`` model type).

Boxes: InternVL grounds with ``<ref>name</ref><box>[[x1, y1, x2, y2]]</box>`` where coordinates
are normalised to 0-1000 of the image (InternVL2 documentation, "Grounding" and the InternVL2.5
report, arXiv 2412.05271, sec. 4 data formats). VLM-R1's JSON answer format is used in prompts;
only the coordinate system differs from Qwen2.5-VL.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlm_r1.models.adapter import VLMAdapter
from vlm_r1.models.registry import register_family


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
    placeholder_tokens: tuple[str, ...] = ("<img>", "</img>", "<IMG_CONTEXT>", "<video>")
