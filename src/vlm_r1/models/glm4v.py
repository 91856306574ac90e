"""GLM-4.1V (``zai-org/GLM-4.1V-9B-Thinking`` / ``-Base``, transformers-native ``glm4v``).

Boxes: ``[x1, y1, x2, y2]``, top-left and bottom-right corners, each normalised by the image
width (x) or height (y) and scaled to 0-1000 (zai-org/GLM-V README, "Grounding"; the GLM-V
grounding skill states ``x = round(x_pixel / W * 1000)``), so ``norm1000`` of the original
image, whatever the processor resizes it to. The model marks a box in its answer with the
special tokens ``<|begin_of_box|>`` and ``<|end_of_box|>``, bracket style varying (same README);
``parsing.parse_boxes`` reads that syntax. GLM-4.1V-Thinking answers
``<think>...</think><answer>...</answer>`` (GLM-4.1V-Thinking report, arXiv 2507.01006, and the
README's fine-tuning example), VLM-R1's own format, so the default prompts apply unchanged.

Chat format (the checkpoint's ``chat_template.jinja``): ``[gMASK]<sop>``, then each turn as
``<|role|>\\n`` + content with no closing token, an image as
``<|begin_of_image|><|image|><|end_of_image|>``, and ``<|assistant|>\\n`` as the generation
prompt; no default system turn (transformers' GLM-4.1V integration test expects the ids of
``[gMASK]<sop><|user|>\\n<|begin_of_image|><|image|>``). A turn ends where the next role token
starts, so the checkpoint's ``generation_config`` stops on ``<|endoftext|>``, ``<|user|>`` and
``<|observation|>`` (ids 151329, 151336, 151338); ``<|user|>`` is the turn end SFT appends.

Everything the shared forwards need works as for Qwen2-VL (transformers ``Glm4vModel``): the
vision tower ``model.visual`` (patch 14, 2x2 merge, temporal patch 2, its downsample and merger
inside) reads ``pixel_values`` + ``image_grid_thw`` and returns one feature tensor per image;
the language model uses 3-D rotary positions (``get_rope_index``) whose per-row offsets are
cached on the inner model as ``rope_deltas``. The text MLP fuses gate and up projections into
``gate_up_proj`` (``Glm4vTextMLP``), hence the LoRA targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vlm_r1.models.adapter import ModelLoadError
from vlm_r1.models.qwen_common import QwenVLAdapter
from vlm_r1.models.registry import register_family

#: What an image or video becomes in a GLM-4.1V prompt (``Glm4vProcessor`` and the chat template).
GLM4V_PLACEHOLDERS = (
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|video|>",
)
#: The checkpoint's ``generation_config.eos_token_id`` (151329, 151336, 151338) as tokens.
GLM4V_STOP_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")


def glm4v_resize(
    height: int,
    width: int,
    factor: int,
    min_pixels: int,
    max_pixels: int,
    temporal: int = 2,
) -> tuple[int, int]:
    """``(height, width)`` the GLM-4.1V image processor resizes an image to.

    Like Qwen's ``smart_resize`` but, as transformers' ``glm4v`` ``smart_resize`` does for an
    image (``num_frames = temporal_patch_size``): a side shorter than ``factor`` is first scaled
    up (aspect kept), and the pixel bounds are compared with ``temporal * height * width``, the
    pixels of the image repeated over the temporal patch.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if temporal * h_bar * w_bar > max_pixels:
        beta = math.sqrt(temporal * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif temporal * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (temporal * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _temporal(processor: Any) -> int:
    return int(getattr(processor.image_processor, "temporal_patch_size", 2) or 2)


@register_family
@dataclass
class Glm4vAdapter(QwenVLAdapter):
    """GLM-4.1V: Qwen2-VL's vision interface and 3-D positions, GLM's chat format and tokens."""

    family: str = "glm4v"
    model_types: tuple[str, ...] = ("glm4v",)
    coordinate_system: str = "norm1000"
    # The vision tower holds its projector: ``visual.downsample`` and ``visual.merger``.
    vision_prefixes: tuple[str, ...] = ("model.visual", "visual")
    lora_targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_up_proj",
        "down_proj",
    )
    placeholder_tokens: tuple[str, ...] = GLM4V_PLACEHOLDERS
    eos_token: str = "<|user|>"
    stop_tokens: tuple[str, ...] = GLM4V_STOP_TOKENS

    def messages(self, num_images: int, text: str, system: str = "") -> list[dict[str, Any]]:
        """The default turns, with the system text as a plain string: GLM-4.1V's template
        writes a system turn's content as it is (a content list would come out as its repr)."""
        turns = super().messages(num_images, text)
        if system:
            turns.insert(0, {"role": "system", "content": system})
        return turns

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        """The checkpoint's three stop tokens and the tokenizer's EOS (tokens it lacks skipped)."""
        ids = {tokenizer.convert_tokens_to_ids(t) for t in self.stop_tokens}
        ids.add(tokenizer.eos_token_id)
        return sorted(ids - {None, tokenizer.unk_token_id})

    def set_pixel_bounds(
        self, processor: Any, min_pixels: int | None, max_pixels: int | None
    ) -> None:
        """Bound the resized image's area (``height * width``) as for Qwen. The processor's
        ``size`` bounds count ``temporal_patch_size`` frames (``glm4v_resize``), so they are
        set to that many times the area."""
        if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
            raise ModelLoadError(f"min_pixels {min_pixels} exceeds max_pixels {max_pixels}")
        t = _temporal(processor)
        super().set_pixel_bounds(
            processor,
            None if min_pixels is None else t * int(min_pixels),
            None if max_pixels is None else t * int(max_pixels),
        )

    def model_input_size(self, processor: Any, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` after ``Glm4vImageProcessor``'s resize (``glm4v_resize``)."""
        ip = processor.image_processor
        size = dict(getattr(ip, "size", None) or {})
        factor = int(ip.patch_size * ip.merge_size)
        w, h = image_size
        rh, rw = glm4v_resize(
            h,
            w,
            factor,
            int(size["shortest_edge"]),
            int(size["longest_edge"]),
            _temporal(processor),
        )
        return rw, rh
