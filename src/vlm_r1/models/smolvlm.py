"""SmolVLM (SmolVLM / SmolVLM2, transformers-native ``smolvlm``; the ``idefics3`` checkpoints too).

Architecture (SmolVLM paper, arXiv 2504.05299; transformers ``modeling_smolvlm.py``): a
SigLIP vision encoder (``model.vision_model``), a pixel-shuffle connector that trades tokens for
width (``model.connector``, one linear ``modality_projection``) and a Llama-architecture SmolLM2
text model (``model.text_model``). SmolVLM2 "is an adaptation of the Idefics3 model" (transformers
``docs/source/en/model_doc/smolvlm.md``) and the first SmolVLM releases (e.g.
``HuggingFaceTB/SmolVLM-Base``/``-Instruct``) are ``Idefics3ForConditionalGeneration``
checkpoints, model type ``idefics3``; that class has the same module names, the same
``get_image_features`` (pooled output: one tensor per batch row) and the same prompt tokens, so
this adapter serves both (tests/unit/models/test_family_smolvlm.py runs an ``idefics3`` model
through it).

Images: the processor (``SmolVLMImageProcessor``) resizes an image so its longest edge is
``size["longest_edge"]``, cuts it into ``max_image_size`` square tiles and appends the whole image
downscaled to one tile (the "global" image). Each tile becomes ``<fake_token_around_image>
<row_i_col_j>`` + ``image_seq_len`` x ``<image>``, the global image ``<fake_token_around_image>
<global-img>`` + ``<image>`` x ``image_seq_len`` + ``<fake_token_around_image>``
(``processing_smolvlm.py``, ``_prompt_split_image``). These are added special tokens of the hub
tokenizers (``<row_1_col_1>`` .. ``<row_6_col_6>``, the 6 x 6 grid ``Idefics3Processor`` reads),
so all of them are forbidden in completions.

Prompt layout: the processor returns ``pixel_values`` ``[batch, frames, 3, H, W]`` padded with
all-zero frames to the batch's largest frame count. :meth:`SmolVLMAdapter.prepare_inputs` stores
one prompt's frames as ``[frames, 1, 3, H, W]`` instead (one row per frame, a batch of one image
each), which the model reads identically: ``get_image_features`` flattens (batch, frames), drops
all-zero frames and returns one feature tensor per row, and the forward concatenates them and
fills the ``<image>`` tokens in order, so the batch axis of ``pixel_values`` is independent of
``input_ids``'. Prompts with different tile counts then stack by concatenation, and a batch's
encoder output splits back per prompt by frame count (``VLMAdapter.encoder_units``' default).

Chat format (the hub checkpoints' ``chat_template.json``, reproduced in transformers'
``SmolVLMProcessor`` tests and its ``DEFAULT_CHAT_TEMPLATE``): ``<|im_start|>User:<image>...
<end_of_utterance>\\nAssistant:``; a turn ends with ``<end_of_utterance>``, which is also the hub
tokenizers' ``eos_token``.

Boxes: SmolVLM has no documented box convention. Its model cards (e.g.
``HuggingFaceTB/SmolVLM-Instruct``) list captioning, visual question answering and
storytelling as uses, and neither they nor the paper define a grounding output format or
coordinate system. vlm-r1 therefore chooses **norm1000**: integers 0-1000 of the original image
per axis. A tiling processor shows the model several crops plus a rescaled whole, so absolute
pixels of "the image the model saw" (``abs_resized``) name no single frame; 0-1 floats
(``norm1``) would not survive VLM-R1's integer JSON answers (a REC answer is a list of ints);
0-1000 integers do, are independent of the processor's resolution settings, and are the
convention of Qwen2-VL, Qwen3-VL and InternVL, so grounding data and prompts carry over as they
are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from vlm_r1.models.adapter import VLMAdapter
from vlm_r1.models.registry import register_family

#: The tile-position markers the hub tokenizers hold (``Idefics3Processor`` reads this 6 x 6 grid).
TILE_MARKERS = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
SMOLVLM_PLACEHOLDERS = (
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    *TILE_MARKERS,
)


def frames_as_rows(
    pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[B, N, C, H, W]`` frames (zero-padded to the batch's largest N) -> ``[M, 1, C, H, W]``,
    the ``M`` real frames in order, one per row; the mask ``[B, N, H, W]`` likewise.

    A padding frame is one whose pixels are all zero: the test the model itself applies
    (``SmolVLMModel.get_image_features``, "padding images are full 0"), so both layouts encode
    exactly the same frames.
    """
    if pixel_values.ndim != 5:
        raise ValueError(
            f"expected SmolVLM pixel_values [batch, frames, channels, height, width], "
            f"got shape {tuple(pixel_values.shape)}"
        )
    b, n = pixel_values.shape[:2]
    flat = pixel_values.reshape(b * n, 1, *pixel_values.shape[2:])
    real = flat.reshape(b * n, -1).ne(0).any(dim=-1)
    mask = None
    if pixel_attention_mask is not None:
        mask = pixel_attention_mask.reshape(b * n, 1, *pixel_attention_mask.shape[2:])[real]
    return flat[real], mask


@register_family
@dataclass
class SmolVLMAdapter(VLMAdapter):
    family: str = "smolvlm"
    model_types: tuple[str, ...] = ("smolvlm", "idefics3")
    coordinate_system: str = "norm1000"
    vision_prefixes: tuple[str, ...] = (
        "model.vision_model",
        "model.connector",
        "vision_model",
        "connector",
    )
    placeholder_tokens: tuple[str, ...] = SMOLVLM_PLACEHOLDERS
    eos_token: str = "<end_of_utterance>"
    encoder_inputs: tuple[str, ...] = ("pixel_values", "pixel_attention_mask")
    images_per_prompt: bool = True

    def prepare_inputs(
        self,
        processor: Any,
        images: Sequence[Sequence[Image.Image]],
        texts: Sequence[str],
        system: str = "",
    ) -> Any:
        """A left-padded batch with its frames one per row (:func:`frames_as_rows`), so that
        prompts with different tile counts concatenate and the encoder output splits per
        prompt; the model computes the same thing from either layout. The images go to the
        processor nested per prompt, the form ``SmolVLMProcessor`` checks against each
        prompt's ``<image>`` count."""
        batch = super().prepare_inputs(processor, images, texts, system)
        if "pixel_values" in batch:
            batch["pixel_values"], mask = frames_as_rows(
                batch["pixel_values"], batch.get("pixel_attention_mask")
            )
            if mask is not None:
                batch["pixel_attention_mask"] = mask
        return batch
