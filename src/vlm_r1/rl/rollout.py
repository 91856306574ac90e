"""Rollout backends: sample G completions per prompt.

``HFRollout`` uses transformers ``generate``. Each prompt's group is sampled with a seed derived
from (run seed, step, prompt's global index), so completions do not depend on how prompts are
split across processes or batched: a 2-process run samples exactly what a 1-process run
samples. Several prompts' groups share one ``generate`` call (``prompts_per_generation``), each
group drawing from its own seeded generator (``rl.group_sampling``); one call per prompt, with
the global generator seeded per prompt, is kept as the reference those calls are checked
against. ``RolloutBackend`` is the interface a vLLM backend implements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import LogitsProcessorList

from vlm_r1.policy.prompts import PreparedPrompt, is_sequence_tensor, stack_prompts
from vlm_r1.rl.group_sampling import GroupSampler

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


#: ``generate`` settings pinned to their neutral values on every call. transformers fills any
#: setting a call leaves unset from the checkpoint's ``generation_config.json``, and chat
#: checkpoints ship defaults there (repetition penalties, min-p, beams ...). Inherited, they
#: would make rollouts sample from something other than the policy the loss scores
#: (log-softmax of logits / temperature, see policy.logprobs) and differ from the vLLM backend,
#: which does not read them; a rollout samples from the logits shaped only by ``temperature``,
#: ``top_k`` and ``top_p`` from the config (and the suppressed tokens). The batched path's
#: :class:`~vlm_r1.rl.group_sampling.GroupSampler` implements exactly those, so pinning the rest
#: is also what makes the two paths sample from the same distribution.
NEUTRAL_GENERATION_SETTINGS: dict[str, Any] = {
    # logits processors transformers adds whatever the decoding mode
    "guidance_scale": None,
    "sequence_bias": None,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "min_length": 0,
    "min_new_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "begin_suppress_tokens": None,
    "watermarking_config": None,
    "renormalize_logits": False,
    # warpers sampling adds besides temperature, top-k and top-p
    "top_h": None,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    # decoding modes and stops other than "sample or argmax, G rows, stop at EOS or length"
    "num_beams": 1,
    "num_return_sequences": 1,
    "penalty_alpha": None,
    "prompt_lookup_num_tokens": None,
    "stop_strings": None,
    "max_time": None,
}


class HFRollout:
    """transformers ``generate``, seeded per prompt group.

    ``prompts_per_generation`` prompts (0: all of a ``generate`` request) share one call: their
    prompts are left-padded to one length and each group's samples are drawn from its own
    generator (``rl.group_sampling``), so a group's completions equal what a call of its own
    gives. 1 makes one call per prompt with the global generator seeded per prompt
    (``generate_group``): the reference the batched calls are tested against.

    ``shared_prefill``: each prompt (image encoding included) is run once, its KV cache is
    repeated G times and the G samples decode from it, instead of encoding the image and
    prefilling the prompt G times. Per-row position state the prefill leaves on the model
    (Qwen's 3-D rotary offsets, ``rope_deltas``) is repeated with the cache. A model that cannot
    continue from a repeated cache falls back to the plain path, with a log line saying so.

    Vision placeholder tokens are suppressed: a sampled ``<|image_pad|>`` would make the next
    forward's image-token count disagree with the image features (a known VLM-R1 crash). The
    suppression is a logits processor transformers applies before sampling on both paths.
    """

    def __init__(
        self,
        processor: Any,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        suppress_token_ids: Sequence[int] = (),
        shared_prefill: bool = True,
        prompts_per_generation: int = 0,
    ):
        if prompts_per_generation < 0:
            raise ValueError(f"prompts_per_generation must be >= 0, got {prompts_per_generation}")
        self.processor = processor
        self.eos_token_ids = list(eos_token_ids)
        self.pad_token_id = pad_token_id
        self.suppress_token_ids = list(suppress_token_ids) or None
        self.shared_prefill = shared_prefill
        self.prompts_per_generation = prompts_per_generation
        self._noted_defaults = False

    def _note_ignored_defaults(self, model: Any) -> None:
        """Say once which of the checkpoint's generation defaults rollouts do not use."""
        if self._noted_defaults:
            return
        self._noted_defaults = True
        own = getattr(model, "generation_config", None)
        ignored = {
            key: getattr(own, key, None)
            for key, neutral in NEUTRAL_GENERATION_SETTINGS.items()
            if getattr(own, key, None) not in (None, neutral)
        }
        if ignored:
            logger.info(
                "rollouts ignore these generation_config defaults of the checkpoint (they would "
                "sample from another distribution than the one trained on): %s",
                ", ".join(f"{k}={v!r}" for k, v in sorted(ignored.items())),
            )

    def _common_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        return dict(
            NEUTRAL_GENERATION_SETTINGS,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            # An empty list rather than None, so a checkpoint's own suppress_tokens are not
            # inherited either.
            suppress_tokens=self.suppress_token_ids or [],
            # The trainer hands over a model whose parameters are all resident (gathered under
            # ZeRO-3, unsharded under FSDP2), so no process waits for the others' lengths.
            # transformers would otherwise turn synchronised decoding on by itself for a
            # sharded model, which hangs when processes make different numbers of calls.
            synced_gpus=False,
        )

    def _sampling_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        """Arguments of the per-group call: transformers samples (from the global generator)."""
        kwargs = self._common_kwargs(params)
        if params.greedy:
            kwargs.update(do_sample=False, temperature=1.0, top_p=1.0, top_k=None)
        else:
            kwargs.update(
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k or None,
            )
        return kwargs

    def _batched_kwargs(self, params: SamplingParams, seeds: Sequence[int]) -> dict[str, Any]:
        """Arguments of a batched call: transformers decodes greedily; when sampling, the
        :class:`GroupSampler` (after the suppression) has already drawn each row's token."""
        kwargs = self._common_kwargs(params)
        kwargs.update(do_sample=False, temperature=1.0, top_p=1.0, top_k=None)
        if not params.greedy:
            sampler = GroupSampler(
                seeds,
                params.num_generations,
                params.temperature,
                params.top_k or None,
                params.top_p,
            )
            kwargs["logits_processor"] = LogitsProcessorList([sampler])
        return kwargs

    # ------------------------------------------------------------------ one call per prompt
    def generate_group(
        self,
        model: Any,
        features: dict[str, torch.Tensor],
        seed: int,
        params: SamplingParams,
    ) -> torch.Tensor:
        """``[G, T]`` new tokens for one prompt, from the global generator seeded with ``seed``."""
        kwargs = self._sampling_kwargs(params)
        features = {k: v.to(model.device) for k, v in features.items()}
        length = int(features["input_ids"].shape[1])
        if self.shared_prefill:
            out = self._shared_or_none(
                model,
                lambda: self._shared_prefill(
                    model, features, length, seed, params.num_generations, kwargs
                ),
            )
            if out is not None:
                return out
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

    def _shared_or_none(self, model: Any, generate: Callable[[], torch.Tensor]) -> Any:
        """``generate()`` (a shared-prefill path), or None with shared prefill switched off and
        a log line when the model cannot continue from a repeated cache. Running out of memory
        is not that: it propagates."""
        try:
            return generate()
        except torch.OutOfMemoryError:
            raise
        except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError) as err:
            logger.warning(
                "shared-prefill generation is not supported by %s (%s: %s); using plain generation",
                type(model).__name__,
                type(err).__name__,
                err,
            )
            self.shared_prefill = False
            return None

    # ------------------------------------------------------------ several prompts per call
    def generate_prompts(
        self,
        model: Any,
        features: Sequence[dict[str, torch.Tensor]],
        seeds: Sequence[int],
        params: SamplingParams,
    ) -> torch.Tensor:
        """``[B*G, T]`` new tokens for B prompts in one call, G consecutive rows per prompt;
        prompt ``b``'s rows equal ``generate_group(features[b], seeds[b])`` (up to trailing
        pad where other prompts decode longer)."""
        g = params.num_generations
        features = [{k: v.to(model.device) for k, v in f.items()} for f in features]
        sequence_keys = [
            key
            for key in features[0]
            if all(is_sequence_tensor(f[key], int(f["input_ids"].shape[1])) for f in features)
        ]
        if self.shared_prefill:
            out = self._shared_or_none(
                model,
                lambda: self._shared_prefill_batch(
                    model, features, sequence_keys, g, self._batched_kwargs(params, seeds)
                ),
            )
            if out is not None:
                return out
        rows = stack_prompts([f for f in features for _ in range(g)], self.pad_token_id)
        length = int(rows["input_ids"].shape[1])
        return model.generate(**rows, **self._batched_kwargs(params, seeds))[:, length:]

    def _shared_prefill_batch(
        self,
        model: Any,
        features: Sequence[dict[str, torch.Tensor]],
        sequence_keys: Sequence[str],
        g: int,
        kwargs: dict[str, Any],
    ) -> torch.Tensor:
        # Left padding puts every prompt's last token in the last column: prefill the B
        # prompts without it at once, repeat each prompt's cache rows G times (prompt-major,
        # the order of the rows generate() gets), and let generate() process the last column.
        batch = stack_prompts(features, self.pad_token_id)
        length = int(batch["input_ids"].shape[1])
        prefix = {k: v[:, :-1] if k in sequence_keys else v for k, v in batch.items()}
        positions = generation_position_ids(model, prefix["attention_mask"])
        if positions is not None:
            prefix["position_ids"] = positions
        cache = model(**prefix, use_cache=True).past_key_values
        cache.batch_repeat_interleave(g)
        repeat_prefill_row_state(model, len(features), g)
        repeated = {k: batch[k].repeat_interleave(g, dim=0) for k in sequence_keys}
        return model.generate(**repeated, cache=cache, **kwargs)[:, length:]

    @torch.no_grad()
    def generate(
        self,
        model: Any,
        prompts: Sequence[PreparedPrompt],
        seeds: Sequence[int],
        params: SamplingParams,
    ) -> Rollout:
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        self._note_ignored_defaults(model)
        was_training = model.training
        model.eval()
        pieces: list[torch.Tensor] = []
        if self.prompts_per_generation == 1:
            pieces = [
                self.generate_group(model, p.features, seed, params).cpu()
                for p, seed in zip(prompts, seeds, strict=True)
            ]
        else:
            size = self.prompts_per_generation or max(1, len(prompts))
            for start in range(0, len(prompts), size):
                chunk = prompts[start : start + size]
                out = self.generate_prompts(
                    model, [p.features for p in chunk], seeds[start : start + size], params
                )
                pieces.append(out.cpu())
        model.train(was_training)
        return assemble_rollout(
            prompts,
            params.num_generations,
            [row for piece in pieces for row in piece],
            self.eos_token_ids,
            self.pad_token_id,
            self.processor,
        )


def generation_position_ids(model: Any, attention_mask: torch.Tensor) -> torch.Tensor | None:
    """The position ids ``generate`` gives left-padded prompt rows, for a prefill whose cache
    it continues; None where the model derives its own (Qwen-VL and GLM-4V override
    ``_prepare_position_ids_for_generation`` with 3-D rotary positions and keep their offsets).

    transformers' default numbers only attended tokens (``cumsum(mask) - 1``, pads at 0); a
    forward given no position ids numbers every column, pads included. A prefill in one
    convention decoded in the other shifts each padded row's cached keys by its pad count,
    which rotary attention does not ignore: the tiny Gemma 3's next-token logits moved by
    ~0.4 (enough to change sampled tokens), the tiny InternVL's by ~3e-3.
    """
    from transformers import GenerationMixin

    derive = getattr(model, "_prepare_position_ids_for_generation", None)
    default = GenerationMixin._prepare_position_ids_for_generation
    if getattr(derive, "__func__", None) is not default:
        return None
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def repeat_prefill_row_state(model: Any, batch: int, repeats: int) -> None:
    """Repeat, like the KV cache, per-row state a prefill of ``batch`` rows left on the model.

    Qwen-VL models keep the prefill's 3-D rotary offsets (``rope_deltas``, ``[batch, 1]``) on
    their inner model and add them to the positions of every later token; generate() adds them
    to its ``[batch * repeats, L]`` positions, which broadcasts for one prompt but not for
    several. Models without such state are untouched.
    """
    if repeats == 1:
        return
    for module in model.modules():
        deltas = getattr(module, "rope_deltas", None)
        if isinstance(deltas, torch.Tensor) and deltas.shape[0] == batch:
            module.rope_deltas = deltas.repeat_interleave(repeats, dim=0)
