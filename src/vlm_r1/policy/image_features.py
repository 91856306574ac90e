"""Vision features encoded once per prompt and shared by the prompt's G completions.

A GRPO step holds B prompts x G completions. Without sharing, every training forward (policy,
old policy, reference) stacks each image G times and runs the vision tower over all copies.
Here the unique prompts' images go through the encoder once (``get_image_features``), and each
row receives its prompt's features through transformers' ``mm_encoder_outputs`` argument, which
every supported family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL incl. deepstack features, InternVL)
accepts in place of ``pixel_values``. Position ids (Qwen's 3-D mrope) are still computed from
``input_ids`` and ``image_grid_thw``, exactly as in the plain forward.

Gradients: when the vision tower trains, the features are computed once per optimiser step with
autograd on, and each micro-batch reads them through detached leaves
(:meth:`SharedImageFeatures.trainable`). Micro-batch backwards accumulate into the leaves'
``.grad``; :meth:`SharedImageFeatures.backward` then runs the vision tower's backward once with
the summed gradient. By the chain rule this equals the gradient of the repeated path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vlm_r1.policy.prompts import PreparedPrompt


@dataclass
class PromptImageFeatures:
    """One prompt's share of the encoder output: ``pooler`` holds one entry per image (Qwen)
    or the prompt's tiles as one tensor (InternVL); ``deepstack`` (Qwen3-VL) one list per layer."""

    pooler: list[torch.Tensor] | torch.Tensor
    deepstack: list[list[torch.Tensor]] | None


def has_images(prompts: Sequence[PreparedPrompt]) -> bool:
    return any("pixel_values" in p.features for p in prompts)


class SharedImageFeatures:
    """Encoder outputs of a rollout batch's unique prompts, handed out per row."""

    def __init__(
        self, output_type: type, per_prompt: list[PromptImageFeatures | None], tuple_pooler: bool
    ):
        self.output_type = output_type
        self.per_prompt = per_prompt
        self.tuple_pooler = tuple_pooler
        self._sources: list[torch.Tensor] = []  # autograd-connected tensors behind the leaves
        self._leaves: list[torch.Tensor] = []

    @classmethod
    def encode(
        cls, model: torch.nn.Module, prompts: Sequence[PreparedPrompt]
    ) -> SharedImageFeatures:
        """Run the vision encoder once over ``prompts`` (each prompt once, whatever G is).

        ``model`` is the unwrapped ``...ForConditionalGeneration``; autograd follows the caller's
        grad mode (``torch.no_grad()`` for frozen towers and reference/old log-probs).
        """
        with_images = [p for p in prompts if "pixel_values" in p.features]
        if not with_images:
            raise ValueError("no prompt in this batch has an image; nothing to encode")
        device = next(model.parameters()).device
        adapter = with_images[0].adapter  # which tensors the encoder reads, and how many
        inputs = {  # outputs each prompt makes (Qwen: per image; InternVL: per tile)
            key: torch.cat([p.features[key] for p in with_images]).to(device)
            for key in adapter.encoder_inputs
            if key in with_images[0].features
        }
        output = model.get_image_features(**inputs, return_dict=True)
        pooler = output.pooler_output
        tuple_pooler = isinstance(pooler, (tuple, list))
        deepstack = getattr(output, "deepstack_features", None)
        per_prompt: list[PromptImageFeatures | None] = []
        start = 0
        for prompt in prompts:
            if "pixel_values" not in prompt.features:
                per_prompt.append(None)
                continue
            stop = start + adapter.encoder_units(prompt.features)
            per_prompt.append(
                PromptImageFeatures(
                    list(pooler[start:stop]) if tuple_pooler else pooler[start:stop],
                    [list(layer[start:stop]) for layer in deepstack] if deepstack else None,
                )
            )
            start = stop
        return cls(type(output), per_prompt, tuple_pooler)

    # ---------------------------------------------------------------------------- gradients
    def trainable(self) -> SharedImageFeatures:
        """A view whose tensors are detached leaves; call :meth:`backward` after the micro-batches."""
        view = SharedImageFeatures(self.output_type, [], self.tuple_pooler)

        def leaf(t: torch.Tensor) -> torch.Tensor:
            copy = t.detach().requires_grad_(True)
            view._sources.append(t)
            view._leaves.append(copy)
            return copy

        for item in self.per_prompt:
            if item is None:
                view.per_prompt.append(None)
                continue
            pooler = [leaf(t) for t in item.pooler] if self.tuple_pooler else leaf(item.pooler)
            deepstack = (
                [[leaf(t) for t in layer] for layer in item.deepstack] if item.deepstack else None
            )
            view.per_prompt.append(PromptImageFeatures(pooler, deepstack))
        return view

    def backward(self) -> None:
        """Send the gradient accumulated on the shared leaves through the vision tower, once."""
        sources, grads = [], []
        for source, leaf in zip(self._sources, self._leaves, strict=True):
            if leaf.grad is not None and source.requires_grad:
                sources.append(source)
                grads.append(leaf.grad)
        if sources:
            torch.autograd.backward(sources, grads)
        self._sources, self._leaves = [], []

    # ------------------------------------------------------------------------------- rows
    def for_rows(self, prompt_indices: Sequence[int]) -> dict[str, Any] | None:
        """``mm_encoder_outputs`` for a micro-batch whose row r shows prompt ``prompt_indices[r]``."""
        items = [self.per_prompt[i] for i in prompt_indices]
        items = [item for item in items if item is not None]
        if not items:
            return None
        if self.tuple_pooler:
            pooler: Any = tuple(t for item in items for t in item.pooler)
        else:
            pooler = torch.cat([item.pooler for item in items], dim=0)
        fields: dict[str, Any] = {"pooler_output": pooler}
        if items[0].deepstack is not None:
            layers = len(items[0].deepstack)
            fields["deepstack_features"] = [
                tuple(t for item in items for t in item.deepstack[layer]) for layer in range(layers)
            ]
        return {"image": self.output_type(**fields)}
