"""Prepared prompts: each sample processed once (chat template + images) and kept per prompt.

A step's rollouts and training forwards reuse these features: rows of a micro-batch are
built by stacking the features of their prompts (``stack_prompts``), left-padding the
sequence tensors and concatenating the image tensors, which works the same for every family
(Qwen's flattened patches + ``image_grid_thw``, InternVL's tiles).

The words of a prompt are the run's ``prompt`` section (``PromptConfig``: system turn, a
template per task; VLM-R1's by default). GRPO, SFT and evaluation all build prompts here, and
each saved model folder records the resolved settings in :data:`PROMPT_FILE`
(:func:`write_prompt_file`), which ``vlm-r1 eval`` reads back, so a model is evaluated with
the prompt it was trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from vlm_r1.config import ConfigError
from vlm_r1.config.sections import PromptConfig
from vlm_r1.data.images import DEFAULT_MAX_IMAGE_PIXELS
from vlm_r1.data.jsonl import load_sample_images
from vlm_r1.data.sample import Sample
from vlm_r1.models.adapter import TASK_TEMPLATES, VLMAdapter
from vlm_r1.models.boxes import BoxSpace

#: Written into every saved model folder: the prompt settings the model was trained with.
PROMPT_FILE = "vlm_r1_prompt.json"


@dataclass
class PreparedPrompt:
    """One sample as its model family's inputs; ``adapter`` is that family, which says how to
    read the features (encoder units, continuation positions) in the shared forward paths."""

    sample: Sample
    features: dict[str, torch.Tensor]  # one prompt: sequence tensors [1, L], image tensors
    box_space: BoxSpace | None  # of the first image, for box rewards
    image_size: tuple[int, int] | None
    adapter: VLMAdapter
    #: The chat-templated prompt string the features were built from: what a vLLM engine is
    #: sent, so it reads exactly the prompt the HF forwards score. Empty when not built.
    chat_text: str = ""
    #: Every image's box space in prompt order (multi-image answers name their image).
    image_spaces: tuple[BoxSpace, ...] = ()

    @property
    def length(self) -> int:
        return int(self.features["input_ids"].shape[1])

    def spaces(self) -> tuple[BoxSpace, ...]:
        """Every image's box space (just the first image's where only that one is known)."""
        if self.image_spaces:
            return self.image_spaces
        return (self.box_space,) if self.box_space is not None else ()


def prepare_prompt(
    adapter: VLMAdapter,
    processor: Any,
    sample: Sample,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    prompt_config: PromptConfig | None = None,
) -> PreparedPrompt:
    """Decode the sample's images (each header checked against ``max_image_pixels`` first,
    ``data.max_image_pixels``) and build the model's inputs for its chat prompt, worded by
    ``prompt_config`` (default: VLM-R1's prompts)."""
    settings = prompt_config or PromptConfig()
    images = load_sample_images(sample, max_image_pixels)
    text = prompt_words(adapter, sample, settings)
    batch = adapter.prepare_inputs(processor, [images], [text], settings.system)
    features = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    spaces = tuple(adapter.box_space(processor, image.size) for image in images)
    return PreparedPrompt(
        sample,
        features,
        spaces[0] if spaces else None,
        images[0].size if images else None,
        adapter,
        chat_prompt_text(adapter, processor, sample, settings),
        spaces,
    )


#: Appended to a box task's prompt when the sample has several images, so the model can say
#: which image each box lies in (boxes are mapped with their own image's coordinate system).
MULTI_IMAGE_BOX_HINT = (
    " The images are numbered from 1 in the order given;"
    ' give each box the number of its image as "image".'
)
BOX_TASKS = ("rec", "ovd")


def prompt_words(adapter: VLMAdapter, sample: Sample, settings: PromptConfig) -> str:
    """The user turn's text: the task's template around the question, plus
    :data:`MULTI_IMAGE_BOX_HINT` for a box task over several images."""
    text = adapter.prompt(sample.task, sample.question, settings.templates)
    if len(sample.images) > 1 and sample.task in BOX_TASKS:
        text += MULTI_IMAGE_BOX_HINT
    return text


def chat_prompt_text(
    adapter: VLMAdapter, processor: Any, sample: Sample, prompt_config: PromptConfig | None = None
) -> str:
    """The sample's chat-templated prompt string (images as the family's placeholders), worded
    by ``prompt_config``: what ``prepare_prompt`` tokenises, without decoding any image."""
    settings = prompt_config or PromptConfig()
    text = prompt_words(adapter, sample, settings)
    return adapter.prompt_texts(processor, [len(sample.images)], [text], settings.system)[0]


# ------------------------------------------------------------------ saved prompt settings
def resolved_prompt(prompt_config: PromptConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings as a checkpoint records them: the system text and every task's template,
    VLM-R1's filled in for tasks the run left out, so a later change of the defaults cannot
    change how an old checkpoint is prompted."""
    settings = _as_prompt_config(prompt_config)
    return {"system": settings.system, "templates": {**TASK_TEMPLATES, **settings.templates}}


def write_prompt_file(
    folder: str | os.PathLike, prompt_config: PromptConfig | Mapping[str, Any] | None
) -> Path:
    """Write :data:`PROMPT_FILE` into a model folder (``None``: a config without a ``prompt``
    section, i.e. VLM-R1's prompts); ``vlm-r1 eval`` of that folder then uses these settings."""
    path = Path(folder) / PROMPT_FILE
    path.write_text(json.dumps(resolved_prompt(prompt_config), indent=2) + "\n")
    return path


def read_prompt_file(path: str | os.PathLike, what: str) -> PromptConfig:
    """Prompt settings from a YAML/JSON file: a ``prompt`` section (``system``, ``templates``),
    a :data:`PROMPT_FILE`, or a recipe or run ``config.json`` holding a ``prompt:`` section.
    Checked as at config load; a problem is a ``ConfigError`` that starts with ``what`` (the
    flag or file it came from)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{what}: file not found: {file}")
    try:
        text = file.read_text()
        try:  # JSON first: YAML reads JSON too, but not its surrogate-pair escapes
            tree = json.loads(text)
        except json.JSONDecodeError:
            tree = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} ({file}): not valid YAML/JSON: {err}") from err
    if isinstance(tree, dict) and isinstance(tree.get("prompt"), dict):
        tree = tree["prompt"]
    try:
        return _as_prompt_config(tree)
    except ConfigError as err:
        raise ConfigError(f"{what} ({file}): {err}") from err


def _as_prompt_config(value: PromptConfig | Mapping[str, Any] | None) -> PromptConfig:
    """A checked ``PromptConfig`` from one, from its dict form (``asdict``), or from ``None``."""
    if isinstance(value, PromptConfig):
        settings = value
    elif value is None:
        settings = PromptConfig()
    elif isinstance(value, Mapping):
        known = {"system", "templates"}
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise ConfigError(
                f"unknown prompt key(s) {', '.join(unknown)}; a prompt section has system and "
                "templates (or give a recipe or run config.json with a prompt: section)"
            )
        templates = value.get("templates", {})
        if not isinstance(templates, Mapping):
            raise ConfigError(f"prompt.templates={templates!r} must be a mapping")
        settings = PromptConfig(system=value.get("system", ""), templates=dict(templates))
    else:
        raise ConfigError(f"prompt settings must be a mapping, got {value!r}")
    settings.validate()
    return settings


def is_sequence_tensor(value: torch.Tensor, length: int) -> bool:
    """A per-token tensor of one prompt (``[1, length]``: ids, masks, token types)."""
    return value.ndim == 2 and value.shape[0] == 1 and value.shape[1] == length


def stack_prompts(
    features: Sequence[dict[str, torch.Tensor]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Batch single-prompt features: sequence tensors left-padded to one length, others concatenated."""
    longest = max(int(f["input_ids"].shape[1]) for f in features)
    out: dict[str, torch.Tensor] = {}
    for key in features[0]:
        parts = []
        for f in features:
            value = f[key]
            length = int(f["input_ids"].shape[1])
            if is_sequence_tensor(value, length):
                pad_value = pad_token_id if key == "input_ids" else 0
                value = torch.nn.functional.pad(value, (longest - length, 0), value=pad_value)
            parts.append(value)
        out[key] = torch.cat(parts, dim=0)
    return out
