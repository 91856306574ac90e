"""Rollout backends: sample G completions per prompt.

``HFRollout`` uses transformers ``generate``. Each prompt's group is generated in its own call
with a seed derived from (run seed, step, prompt's global index), so completions do not depend
on how prompts are split across processes or batched: a 2-process run samples exactly what a
1-process run samples. ``RolloutBackend`` is the interface a vLLM backend implements.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vlm_r1.policy.prompts import PreparedPrompt, is_sequence_tensor, stack_prompts

logger = logging.getLogger(__name__)


@dataclass
class Rollout:
    """Completions for B prompts x G samples; row r belongs to prompt r // G."""

    prompts: list[PreparedPrompt]
    group_size: int
    completion_ids: torch.Tensor  # [B*G, T] right-padded with pad
    completion_mask: torch.Tensor  # [B*G, T] 1 up to and including EOS
    texts: list[str]
    truncated: torch.Tensor  # [B*G] bool: hit max_completion_length without EOS

    def prompt_of(self, row: int) -> PreparedPrompt:
        return self.prompts[row // self.group_size]

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)

    def group_rows(self, keep: torch.Tensor) -> torch.Tensor:
        """Row indices ``[K*G]`` of the groups flagged in ``keep`` ``[B]`` (bool), in order."""
        return torch.arange(len(self.texts)).view(-1, self.group_size)[keep].reshape(-1)

    def select_groups(self, keep: torch.Tensor) -> Rollout:
        """The groups flagged in ``keep`` ``[B]`` (bool), every field alike."""
        rows = self.group_rows(keep)
        return Rollout(
            [p for p, k in zip(self.prompts, keep.tolist(), strict=True) if k],
            self.group_size,
            self.completion_ids[rows],
            self.completion_mask[rows],
            [self.texts[i] for i in rows.tolist()],
            self.truncated[rows],
        )

    @classmethod
    def cat(cls, parts: Sequence[Rollout]) -> Rollout:
        """One rollout from several (e.g. sampling rounds), completions right-padded to the
        longest; the mask marks the padding, so it is never scored."""
        width = max(p.completion_ids.shape[1] for p in parts)

        def padded(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, width - t.shape[1]))

        return cls(
            [prompt for p in parts for prompt in p.prompts],
            parts[0].group_size,
            torch.cat([padded(p.completion_ids) for p in parts]),
            torch.cat([padded(p.completion_mask) for p in parts]),
            [t for p in parts for t in p.texts],
            torch.cat([p.truncated for p in parts]),
        )


@dataclass(frozen=True)
class SamplingParams:
    num_generations: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False  # argmax decoding (evaluation); temperature/top_p/top_k are then unused


class RolloutBackend(Protocol):
    def generate(
        self,
        model: Any,
        prompts: Sequence[PreparedPrompt],
        seeds: Sequence[int],
        params: SamplingParams,
    ) -> Rollout: ...


def completion_mask(ids: torch.Tensor, eos_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, T]`` mask up to and including the first EOS, and ``[N]`` truncated (no EOS) flags."""
    is_eos = torch.isin(ids, torch.tensor(list(eos_ids), device=ids.device))
    seen_before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()  # EOS strictly before t
    mask = (seen_before == 0).long()
    return mask, ~is_eos.any(dim=1)


def assemble_rollout(
    prompts: Sequence[PreparedPrompt],
    group_size: int,
    rows: Sequence[Sequence[int] | torch.Tensor],
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    processor: Any,
    stopped_on_length: Sequence[bool] | None = None,
) -> Rollout:
    """A :class:`Rollout` from each completion's new tokens (rows of any length, G per prompt).

    Rows are right-padded; the mask covers each row up to and including its first EOS and
    never past its own length. A row without EOS is truncated; a backend that reports why it
    stopped (``stopped_on_length``) narrows that to rows that hit the token limit.
    """
    width = max(1, max(len(row) for row in rows))
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    lengths = torch.tensor([len(row) for row in rows])
    mask, no_eos = completion_mask(ids, eos_token_ids)
    mask = mask * (torch.arange(width)[None] < lengths[:, None])
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_token_id))
    truncated = no_eos if stopped_on_length is None else no_eos & torch.tensor(stopped_on_length)
    texts = processor.batch_decode(ids, skip_special_tokens=True)
    return Rollout(list(prompts), group_size, ids, mask, texts, truncated)


class HFRollout:
    """transformers ``generate``, one call per prompt group, seeded per prompt.

    ``shared_prefill``: the prompt (image encoding included) is run once, its KV cache is
    repeated G times and the G samples decode from it, instead of encoding the image and
    prefilling the prompt G times. Qwen's 3-D rotary offsets (``rope_deltas``) computed in that
    prefill are repeated with the batch by the model itself. A model that cannot continue from
    a repeated cache falls back to the plain path, with a log line saying so.

    Vision placeholder tokens are suppressed: a sampled ``<|image_pad|>`` would make the next
    forward's image-token count disagree with the image features (a known VLM-R1 crash).
    """

    def __init__(
        self,
        processor: Any,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        suppress_token_ids: Sequence[int] = (),
        shared_prefill: bool = True,
    ):
        self.processor = processor
        self.eos_token_ids = list(eos_token_ids)
        self.pad_token_id = pad_token_id
        self.suppress_token_ids = list(suppress_token_ids) or None
        self.shared_prefill = shared_prefill

    def _sampling_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        do_sample = not params.greedy
        kwargs: dict[str, Any] = dict(
            do_sample=do_sample,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            suppress_tokens=self.suppress_token_ids,
            # The trainer hands over a model whose parameters are all resident (gathered under
            # ZeRO-3, unsharded under FSDP2), so no process waits for the others' lengths.
            # transformers would otherwise turn synchronised decoding on by itself for a
            # sharded model, which hangs when processes make different numbers of calls.
            synced_gpus=False,
        )
        if do_sample:
            kwargs.update(
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None
            )
        return kwargs

    def generate_group(
        self,
        model: Any,
        features: dict[str, torch.Tensor],
        seed: int,
        params: SamplingParams,
    ) -> torch.Tensor:
        """``[G, T]`` new tokens for one prompt."""
        kwargs = self._sampling_kwargs(params)
        features = {k: v.to(model.device) for k, v in features.items()}
        length = int(features["input_ids"].shape[1])
        if self.shared_prefill:
            try:
                return self._shared_prefill(
                    model, features, length, seed, params.num_generations, kwargs
                )
            except (
                TypeError,
                ValueError,
                AttributeError,
                NotImplementedError,
                RuntimeError,
            ) as err:
                logger.warning(
                    "shared-prefill generation is not supported by %s (%s: %s); "
                    "using plain generation",
                    type(model).__name__,
                    type(err).__name__,
                    err,
                )
                self.shared_prefill = False
        batch = stack_prompts([features] * params.num_generations, self.pad_token_id)
        torch.manual_seed(seed)
        return model.generate(**batch, **kwargs)[:, length:]

    def _shared_prefill(
        self,
        model: Any,
        features: dict[str, torch.Tensor],
        length: int,
        seed: int,
        g: int,
        kwargs: dict[str, Any],
    ) -> torch.Tensor:
        # Prefill all but the last prompt token once; generate() then processes that token for
        # the G copies and samples from there.
        prefix = {k: v[:, :-1] if is_sequence_tensor(v, length) else v for k, v in features.items()}
        cache = model(**prefix, use_cache=True).past_key_values
        cache.batch_repeat_interleave(g)
        repeated = {k: v.repeat(g, 1) for k, v in features.items() if is_sequence_tensor(v, length)}
        torch.manual_seed(seed)
        return model.generate(**repeated, cache=cache, **kwargs)[:, length:]

    @torch.no_grad()
    def generate(
        self,
        model: Any,
        prompts: Sequence[PreparedPrompt],
        seeds: Sequence[int],
        params: SamplingParams,
    ) -> Rollout:
        was_training = model.training
        model.eval()
        pieces = [
            self.generate_group(model, p.features, seed, params).cpu()
            for p, seed in zip(prompts, seeds, strict=True)
        ]
        model.train(was_training)
        return assemble_rollout(
            prompts,
            params.num_generations,
            [row for piece in pieces for row in piece],
            self.eos_token_ids,
            self.pad_token_id,
            self.processor,
        )
