"""Gemma 3 (``google/gemma-3-4b-it`` and siblings; transformers-native ``gemma3`` model type,
``Gemma3ForConditionalGeneration``).

Architecture (Gemma 3 report, arXiv 2503.19786, sec. 2; transformers ``modeling_gemma3.py``):
a SigLIP vision tower (``vision_tower``) encodes one 896x896 image, and
``multi_modal_projector`` average-pools its 64x64 patches to ``mm_tokens_per_image`` (256)
soft tokens and projects them into the text model. The language model interleaves five
sliding-window layers with one global layer and scales its input embeddings by sqrt(hidden).

Prompt (the real chat template; ``Gemma3Processor``): ``<bos>`` then
``<start_of_turn>user\\n ... <end_of_turn>\\n<start_of_turn>model\\n``. There is no system
role: the template puts a system message's text and a blank line at the start of the first
user turn, so the default :meth:`VLMAdapter.messages` (a system turn before the user turn) is
what the real template expects. An image part is written as ``<start_of_image>``, which the
processor expands to ``\\n\\n<start_of_image>`` + 256 ``<image_soft_token>`` +
``<end_of_image>\\n\\n`` (``full_image_sequence``); all three are placeholders a completion
must never contain. A turn ends with ``<end_of_turn>`` (id 106 in the real vocabulary, one of
the checkpoint's ``eos_token_id`` [1, 106]).

Forward: the processor returns ``token_type_ids`` (1 on image soft tokens); with them the
model lets an image's tokens attend to each other bidirectionally, without them it is purely
causal. Every prompt keeps them in its features and ``policy.logprobs`` appends zeros (text)
for completion tokens, so training forwards see the same mask as generation's prefill. The
real config has no final-logit soft-capping (``final_logit_softcapping: null``; Gemma 3
replaced Gemma 2's soft-capping with QK-norm), and ``Gemma3ForConditionalGeneration`` applies
none, so the chunked scoring head computes the same log-probs as the plain forward.

Boxes: Gemma 3 has no documented grounding coordinate convention. Its report does not train
detection or describe a box format; PaliGemma (its predecessor VLM) wrote ``<locYYYY>`` tokens
(1024 bins, y before x), which Gemma 3's vocabulary keeps but its model card never documents
for Gemma 3. We choose ``norm1000`` for VLM-R1's JSON answers: the processor resizes every
image to one fixed square, ignoring the aspect ratio, so resized-pixel coordinates
(``abs_resized``) would be the same numbers as a 0-896 normalisation and carry no extra
meaning, while 0-1000 integers are what the other supported families (Qwen2-VL, Qwen3-VL,
InternVL) write, tokenize to at most four digits and need no per-image information to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_r1.models.adapter import ModelLoadError, VLMAdapter
from vlm_r1.models.registry import register_family


@register_family
@dataclass
class Gemma3Adapter(VLMAdapter):
    family: str = "gemma3"
    model_types: tuple[str, ...] = ("gemma3",)
    coordinate_system: str = "norm1000"
    vision_prefixes: tuple[str, ...] = (
        "model.vision_tower",
        "model.multi_modal_projector",
        "vision_tower",
        "multi_modal_projector",
    )
    placeholder_tokens: tuple[str, ...] = (
        "<start_of_image>",
        "<image_soft_token>",
        "<end_of_image>",
    )
    eos_token: str = "<end_of_turn>"
    #: Images go in one list per prompt: ``Gemma3Processor`` reads a flat list as all images
    #: of a single prompt. (The chat template starts with ``<bos>``, and Gemma's tokenizer
    #: would add a second one: ``VLMAdapter.prepare_inputs`` adds no special tokens.)
    images_per_prompt: bool = True
    #: transformers marks Gemma 3 ``_supports_flash_attn = False``: flash kernels drop the
    #: bidirectional mask over image tokens.
    no_flash_attention: str = (
        "Gemma 3 (flash attention cannot apply its bidirectional mask over image tokens)"
    )

    def set_pixel_bounds(
        self, processor: Any, min_pixels: int | None, max_pixels: int | None
    ) -> None:
        """Refused: Gemma 3 has no pixel budget to bound (see the message)."""
        raise ModelLoadError(
            "model.min_pixels / model.max_pixels are Qwen-VL processor settings; the gemma3 "
            "processor resizes every image to one fixed square (image_processor.size in the "
            "checkpoint, 896x896 for Gemma 3), which the vision tower's position embeddings need"
        )

    def model_input_size(self, processor: Any, image_size: tuple[int, int]) -> tuple[int, int]:
        """Every image becomes the image processor's fixed square (pan-and-scan off)."""
        size = processor.image_processor.size
        return int(size["width"]), int(size["height"])
