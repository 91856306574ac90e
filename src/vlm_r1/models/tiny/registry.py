"""What a tiny build needs from one family, and the registry that finds it by family name.

A hub checkpoint brings its own config, vocabulary, processor and chat template; a tiny one is
given them here. Keeping this apart from the family adapters (``models/<family>.py``) means an
adapter holds only what a real checkpoint needs. Each builder module registers its classes with
``register_builder``, as the adapters do with ``models.registry.register_family``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch

from vlm_r1.models.tiny.recipes import TinyRecipe


@dataclass
class TinyBuilder:
    """One family's tiny recipe. Subclasses set the class attributes and override the hooks."""

    family: str = ""
    #: Special tokens the tokenizer must contain for the processor and chat template to work.
    special_tokens: tuple[str, ...] = ()
    #: Named special tokens the processor reads as tokenizer attributes (``tokenizer.<name>``).
    named_special_tokens: dict[str, str] = field(default_factory=dict)
    pad_token: str = "<|endoftext|>"
    chat_template: str = ""

    def config(self, recipe: TinyRecipe, token_ids: dict[str, int]) -> Any:
        """The family's real config class, sized by ``recipe``, pointing at our token ids."""
        raise NotImplementedError(f"{self.family} has no tiny recipe")

    def processor(self, tokenizer: Any, recipe: TinyRecipe) -> Any:
        """The family's real processor around ``tokenizer``, with the recipe's image bounds."""
        raise NotImplementedError(f"{self.family} has no tiny recipe")

    def init_weights(self, model: torch.nn.Module) -> None:
        """Family-specific initialisation of a from-scratch tiny model (default: none)."""


BUILDERS: dict[str, TinyBuilder] = {}
_BUILDER_MODULES = ("qwen", "internvl", "gemma3", "smolvlm", "glm4v", "llava_onevision")


def register_builder(cls: type[TinyBuilder]) -> type[TinyBuilder]:
    """Class decorator: register one builder instance under its family name."""
    builder = cls()
    BUILDERS[builder.family] = builder
    return cls


def get_builder(family: str) -> TinyBuilder:
    """The tiny builder of ``family`` (a family without one cannot be built tiny)."""
    for module in _BUILDER_MODULES:
        importlib.import_module(f"vlm_r1.models.tiny.{module}")
    if family not in BUILDERS:
        raise NotImplementedError(f"{family} has no tiny recipe")
    return BUILDERS[family]
