"""The ``VLMAdapter``: everything that differs between vision-language model families.

Nothing outside ``vlm_r1.models`` asks "is this Qwen?". Code that needs a family-specific
answer (how to phrase a prompt with images, which modules are the vision tower, which
coordinate system the model writes boxes in) asks the adapter. One subclass per family lives
in its own module and registers itself in ``registry.FAMILIES``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlm_r1.errors import UserFacingError
from vlm_r1.models import boxes as box_math
from vlm_r1.models.boxes import BoxSpace, CoordinateSystem

# The VLM-R1 question suffix for grounding tasks (om-ai-lab/VLM-R1 REC/OVD prompts). These are
# the defaults of ``prompt.templates`` (``config.PromptConfig``): ``str.format`` templates with
# one ``{question}`` field, literal braces doubled.
THINK_ANSWER_SUFFIX = (
    " First output the thinking process in <think> </think> tags and then output the final "
    "answer in <answer> </answer> tags."
)
REC_TEMPLATE = "{question}" + THINK_ANSWER_SUFFIX + " Output the final answer in JSON format."
OVD_TEMPLATE = (
    "{question}"
    + THINK_ANSWER_SUFFIX
    + " Output the bbox coordinates of detected objects in <answer></answer>. The bbox "
    'coordinates in Markdown format should be: \n```json\n[{{"bbox_2d": [x1, y1, x2, y2], '
    '"label": "object name"}}]\n```\n If no targets are detected in the image, simply '
    'respond with "None".'
)
QA_TEMPLATE = "{question}" + THINK_ANSWER_SUFFIX
# Click grounding (VLM-R1 has no point task; the answer format follows its REC one).
POINT_TEMPLATE = (
    "{question}" + THINK_ANSWER_SUFFIX + " Output the point to click as [x, y] in JSON format."
)
TASK_TEMPLATES = {
    "rec": REC_TEMPLATE,
    "ovd": OVD_TEMPLATE,
    "count": QA_TEMPLATE,
    "qa": QA_TEMPLATE,
    "point": POINT_TEMPLATE,
}

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


class ModelLoadError(UserFacingError, ValueError):
    """A checkpoint could not be loaded; the message says what was given and what is supported."""


@dataclass
class VLMAdapter:
    """Family-specific knowledge. Subclasses set the class attributes and override hooks."""

    family: str = ""
    model_types: tuple[str, ...] = ()
    coordinate_system: CoordinateSystem = "norm1000"
    #: Name prefixes (on the ForConditionalGeneration model) of the vision tower + projector.
    vision_prefixes: tuple[str, ...] = ()
    #: Linear layers of the language model that LoRA adapts by default.
    lora_targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    #: Vision placeholder tokens a model must never generate (they would break the next forward).
    placeholder_tokens: tuple[str, ...] = ()
    #: The token that ends an assistant turn (a completion stops there).
    eos_token: str = "<|im_end|>"
    #: Give the processor one list of images per prompt rather than one flat list. Gemma 3,
    #: SmolVLM and LLaVA-OneVision processors need it (a flat list is read as all the images
    #: of one prompt, or cannot be matched to each prompt's placeholders).
    images_per_prompt: bool = False
    #: Why this family cannot run flash attention ("" when it can): ``load`` refuses it by
    #: name, before touching the checkpoint.
    no_flash_attention: str = ""

    # ----- loading -------------------------------------------------------------------------
    def load(
        self,
        path: str | os.PathLike,
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        device_map: str | dict | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> tuple[torch.nn.Module, Any]:
        """Load model and processor with the same code for a tiny local and a hub checkpoint."""
        from transformers import AutoModelForImageTextToText

        if self.no_flash_attention and attn_implementation.startswith("flash_attention"):
            raise ModelLoadError(
                f"attn_implementation={attn_implementation!r} is not supported by "
                f"{self.no_flash_attention}; use 'sdpa' or 'eager'"
            )
        if dtype not in DTYPES:
            raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
        if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ModelLoadError(
                f"unknown attn_implementation {attn_implementation!r}; "
                f"choose one of {ATTENTION_IMPLEMENTATIONS}"
            )
        check_attention_backend(attn_implementation)
        model = AutoModelForImageTextToText.from_pretrained(
            str(path),
            dtype=DTYPES[dtype],
            attn_implementation=attn_implementation,
            device_map=device_map,
        )
        return model, self.load_processor(path, min_pixels, max_pixels)

    def load_processor(
        self, path: str | os.PathLike, min_pixels: int | None = None, max_pixels: int | None = None
    ) -> Any:
        """The checkpoint's processor, left-padding, with image pixel bounds applied."""
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(path))
        processor.tokenizer.padding_side = "left"
        if min_pixels is not None or max_pixels is not None:
            self.set_pixel_bounds(processor, min_pixels, max_pixels)
        return processor

    def set_pixel_bounds(
        self, processor: Any, min_pixels: int | None, max_pixels: int | None
    ) -> None:
        """Bound the number of pixels an image is resized to (Qwen's min/max_pixels)."""
        raise ModelLoadError(
            f"model.min_pixels / model.max_pixels are Qwen-VL processor settings; the {self.family} "
            "processor tiles images instead (set its image processor options in the checkpoint)"
        )

    # ----- prompts ---------------------------------------------------------------------------
    def messages(self, num_images: int, text: str, system: str = "") -> list[dict[str, Any]]:
        """One user turn with ``num_images`` images followed by the text (HF chat format),
        after a system turn when ``system`` is set. Without one, the chat template's own
        default stays (Qwen2/2.5-VL's "You are a helpful assistant."), as VLM-R1 trained."""
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)]
        content.append({"type": "text", "text": text})
        turns: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if system:
            turns.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        return turns

    def prompt(self, task: str, question: str, templates: Mapping[str, str] | None = None) -> str:
        """The task's instruction around a question: ``templates[task]`` when given (a run's
        ``prompt.templates``, checked at config load), else VLM-R1's wording (think, then
        answer). The question is inserted as it is: braces in it are not template fields."""
        template = (templates or {}).get(task, TASK_TEMPLATES[task])
        return template.format(question=question)

    def prompt_texts(
        self,
        processor: Any,
        num_images: Sequence[int],
        texts: Sequence[str],
        system: str = "",
    ) -> list[str]:
        """Chat-templated prompt strings, ending with the assistant generation prompt."""
        return [
            processor.apply_chat_template(
                self.messages(n, t, system), tokenize=False, add_generation_prompt=True
            )
            for n, t in zip(num_images, texts, strict=True)
        ]

    def prepare_inputs(
        self,
        processor: Any,
        images: Sequence[Sequence[Image.Image]],
        texts: Sequence[str],
        system: str = "",
    ) -> Any:
        """A left-padded batch (``BatchFeature``) of prompts with their images, tokenized
        without added special tokens (the chat template wrote them)."""
        prompts = self.prompt_texts(processor, [len(im) for im in images], texts, system)
        flat = [im for sample in images for im in sample]
        given = [list(sample) for sample in images] if self.images_per_prompt else flat
        processor.tokenizer.padding_side = "left"
        # The chat template wrote every special token the model expects; a tokenizer that
        # also adds its own (Gemma's <bos>) would double them. transformers'
        # ``apply_chat_template(tokenize=True)`` tokenizes without them for the same reason.
        return processor(
            text=prompts,
            images=given if flat else None,
            padding=True,
            add_special_tokens=False,
            return_tensors="pt",
        )

    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        """Ids that end a completion: the chat turn's end token and the tokenizer's EOS."""
        ids = {tokenizer.convert_tokens_to_ids(self.eos_token), tokenizer.eos_token_id}
        return sorted(ids - {None})

    def forbidden_token_ids(self, tokenizer: Any) -> list[int]:
        """Ids of vision placeholder tokens, to suppress during generation."""
        ids = [tokenizer.convert_tokens_to_ids(t) for t in self.placeholder_tokens]
        return [i for i in ids if i is not None and i != tokenizer.unk_token_id]

    # ----- modules ---------------------------------------------------------------------------
    def vision_parameters(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        """Parameters of the vision tower and its projector/merger (the part ``freeze_vision`` freezes)."""
        return [(n, p) for n, p in model.named_parameters() if self.is_vision_module(n)]

    def is_vision_module(self, name: str) -> bool:
        return any(name.startswith(p) or f".{p}" in f".{name}" for p in self.vision_prefixes)

    def lora_target_regex(self) -> str:
        """A peft ``target_modules`` regex: the LoRA targets, outside the vision tower."""
        vision = "|".join(p.replace(".", r"\.") for p in self.vision_prefixes)
        targets = "|".join(self.lora_targets)
        return rf"^(?!.*(?:{vision})).*\.(?:{targets})$"

    # ----- forwards that reuse work (policy/logprobs.py, policy/image_features.py) ----------
    #: Per-prompt tensors the vision encoder reads (``get_image_features``' arguments).
    encoder_inputs: tuple[str, ...] = ("pixel_values",)

    def encoder_units(self, features: dict[str, Any]) -> int:
        """How many entries of the encoder output one prompt's ``features`` make (default: one
        per ``pixel_values`` row, e.g. InternVL's tiles), so a batch's output can be split back
        per prompt."""
        return int(features["pixel_values"].shape[0]) if "pixel_values" in features else 0

    def reset_positions(self, model: torch.nn.Module) -> None:
        """Forget position state a previous forward left on ``model`` (default: none)."""

    def continuation_positions(
        self, model: torch.nn.Module, attention_mask: torch.Tensor, prefix_length: int, rows: Any
    ) -> torch.Tensor | None:
        """Position ids for completion tokens that continue a cached prompt prefix, after the
        prefix forward; ``attention_mask`` ``[N, L+T]`` covers prefix and completion, ``rows``
        picks each completion's prefix. None (default): the model derives them itself."""
        return None

    # ----- boxes -----------------------------------------------------------------------------
    def model_input_size(self, processor: Any, image_size: tuple[int, int]) -> tuple[int, int]:
        """The ``(width, height)`` the processor resizes an image of ``image_size`` to."""
        return image_size

    def box_space(self, processor: Any, image_size: tuple[int, int]) -> BoxSpace:
        """The coordinate system this model writes boxes in, for an image of ``(width, height)``."""
        model_size = (
            self.model_input_size(processor, image_size)
            if self.coordinate_system == "abs_resized"
            else None
        )
        return BoxSpace(self.coordinate_system, tuple(image_size), model_size)  # type: ignore[arg-type]

    def boxes_to_model(self, processor: Any, image_size: tuple[int, int], boxes: Any) -> np.ndarray:
        """Original-image pixel boxes -> rounded model coordinates (what a perfect model writes)."""
        space = self.box_space(processor, image_size)
        return box_math.round_boxes(box_math.to_model(boxes, space), space)

    def boxes_from_model(
        self, processor: Any, image_size: tuple[int, int], boxes: Any
    ) -> np.ndarray:
        """Model coordinates -> original-image pixels, clamped to the image."""
        return box_math.from_model(boxes, self.box_space(processor, image_size))


def check_attention_backend(attn_implementation: str) -> None:
    """Fail early and clearly when a requested attention backend is not installed."""
    if attn_implementation == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError as err:
            raise ModelLoadError(
                "attn_implementation='flash_attention_2' needs the flash-attn package and a CUDA "
                "GPU (pip install 'vlm-r1[flash]'); use 'sdpa' on this machine"
            ) from err
        if not torch.cuda.is_available():
            raise ModelLoadError(
                "attn_implementation='flash_attention_2' needs a CUDA GPU; use 'sdpa'"
            )
    if attn_implementation == "flash_attention_3" and not torch.cuda.is_available():
        raise ModelLoadError(
            "attn_implementation='flash_attention_3' needs a Hopper GPU; use 'sdpa'"
        )
