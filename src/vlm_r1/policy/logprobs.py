"""Per-token log-probs of completion tokens only.

The model runs on prompt + completion, but the LM head only on the last ``T + 1`` positions
(``logits_to_keep``): the prompt and its hundreds of image tokens never go through the
vocabulary projection. ``log p(token) = logit[token] - logsumexp(logits)``, computed in float32
after dividing by the sampling temperature (the distribution the tokens were drawn from).

Even those ``[N, T, V]`` logits are never held whole: every pass swaps the model's LM head for
``policy.scoring_head.ScoringHead``, which scores at most ``chunk_tokens`` tokens at a time and
recomputes each chunk in backward (see that module for why the head runs inside the model's
forward). :func:`token_logprobs` is the plain computation on whole logits, kept as the
reference the chunked path is tested against.

Every pass can also return each completion token's entropy (``with_entropy=True``, a
:class:`TokenScores`), computed by the scoring head from the same chunks of logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from vlm_r1.policy.prompts import PreparedPrompt, stack_prompts
from vlm_r1.policy.scoring_head import DEFAULT_CHUNK_TOKENS, scoring_dtype, scoring_head

#: Tensors the language forward does not need when encoder outputs are passed in.
REPLACED_INPUTS = ("pixel_values",)


class TokenScores(NamedTuple):
    """What a pass with ``with_entropy=True`` returns: per-token log-probs (with gradient when
    autograd records) and entropies of the tempered distribution (no gradient), both ``[N, T]``."""

    logprobs: torch.Tensor
    entropy: torch.Tensor


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``log_softmax(logits / temperature)`` gathered at ``tokens``: ``[N, T, V] x [N, T] -> [N, T]``.

    The plain computation on whole logits (at least float32: float64 stays exact, for tests).
    """
    scaled = logits.to(scoring_dtype(logits.dtype)) / temperature
    picked = torch.gather(scaled, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(scaled, dim=-1)


def completion_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[PreparedPrompt],
    completion_ids: torch.Tensor,  # [N, T]
    completion_mask: torch.Tensor,  # [N, T]
    pad_token_id: int,
    temperature: float = 1.0,
    image_features: dict[str, Any] | None = None,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
) -> torch.Tensor | TokenScores:
    """Log-probs ``[N, T]`` of each row's completion given its prompt (row i <-> prompts[i]).

    ``image_features``: precomputed vision encoder outputs for these rows, in transformers'
    ``mm_encoder_outputs`` form (see ``policy.image_features``); the pixels are then not stacked
    or encoded again. ``chunk_tokens``: most tokens whose logits exist at once.
    """
    device = next(model.parameters()).device
    batch = completion_batch(
        prompts, completion_ids, completion_mask, pad_token_id, device, image_features
    )
    completion_ids = completion_ids.to(device)
    t = completion_ids.shape[1]
    with scoring_head(model, temperature, chunk_tokens, with_entropy) as head:
        # Position j of the last T + 1 predicts completion token j; the last one is unused.
        head.set_targets(completion_ids)
        logps = model(**batch, logits_to_keep=t + 1, use_cache=False).logits  # [N, T]
    return TokenScores(logps, head.entropies[0]) if with_entropy else logps


def completion_batch(
    prompts: Sequence[PreparedPrompt],
    completion_ids: torch.Tensor,  # [N, T]
    completion_mask: torch.Tensor,  # [N, T]
    pad_token_id: int,
    device: Any,
    image_features: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Model inputs for prompt + completion (prompts left-padded, completion right-padded);
    with ``image_features`` given, those replace the pixels."""
    batch = _prompt_batch(prompts, pad_token_id, image_features is not None, device)
    if image_features is not None:
        batch["mm_encoder_outputs"] = image_features
    completion_ids = completion_ids.to(device)
    batch["input_ids"] = torch.cat([batch["input_ids"], completion_ids], dim=1)
    batch["attention_mask"] = torch.cat(
        [batch["attention_mask"], completion_mask.to(device, batch["attention_mask"].dtype)],
        dim=1,
    )
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in batch:  # completion tokens are text
            batch[key] = torch.cat(
                [batch[key], torch.zeros_like(completion_ids, dtype=batch[key].dtype)], dim=1
            )
    return batch


def _prompt_batch(
    prompts: Sequence[PreparedPrompt], pad_token_id: int, features_given: bool, device: Any
) -> dict[str, Any]:
    """The prompts stacked (left-padded) on ``device``; without pixels when features are given."""
    features = [p.features for p in prompts]
    if features_given:
        features = [{k: v for k, v in f.items() if k not in REPLACED_INPUTS} for f in features]
    return {k: v.to(device) for k, v in stack_prompts(features, pad_token_id).items()}


def shared_prefix_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[PreparedPrompt],
    row_prompt: Sequence[int],
    completion_ids: torch.Tensor,  # [N, T]
    completion_mask: torch.Tensor,  # [N, T]
    pad_token_id: int,
    temperature: float = 1.0,
    image_features: dict[str, Any] | None = None,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
) -> torch.Tensor | TokenScores:
    """Log-probs ``[N, T]`` like :func:`completion_logprobs`, running each prompt once.

    Row ``r`` continues ``prompts[row_prompt[r]]``. The G completions of a group share their
    prompt, and under causal attention the prompt's keys and values do not depend on what
    follows, so the prompt (image tokens included) runs once per unique prompt with its KV
    cache kept, the cache rows are gathered per completion (autograd carries each row's
    gradient back to the one shared prefix), and only the completion tokens run per row.
    The first completion token is scored from the prefix's last position (the scoring head
    picks each row's prefix), the others from the tail's positions ``0 .. T-2``.

    Positions of the completion tokens come from the family
    (``VLMAdapter.continuation_positions``: Qwen's 3-D rotary positions continue from the
    prefix exactly as in the full sequence). ``image_features``: encoder outputs for
    ``prompts`` (not per row), see ``policy.image_features``. ``chunk_tokens``: most tokens
    whose logits exist at once.
    """
    device = next(model.parameters()).device
    prefix = _prompt_batch(prompts, pad_token_id, image_features is not None, device)
    if image_features is not None:
        prefix["mm_encoder_outputs"] = image_features
    adapter = prompts[0].adapter
    adapter.reset_positions(model)  # never read a previous batch's position state
    rows = torch.as_tensor(list(row_prompt), device=device)
    completion_ids = completion_ids.to(device)
    with scoring_head(model, temperature, chunk_tokens, with_entropy) as head:
        head.set_targets(completion_ids[:, :1], rows=rows)
        out = model(**prefix, use_cache=True, logits_to_keep=1)
        first = out.logits  # [N, 1]
        cache = out.past_key_values
        if cache is None:  # e.g. gradient checkpointing turns the cache off in training mode
            raise ValueError("shared_prefix_logprobs needs the model to return a KV cache")
        cache.batch_select_indices(rows)
        mask = torch.cat(
            [
                prefix["attention_mask"][rows],
                completion_mask.to(device, prefix["attention_mask"].dtype),
            ],
            dim=1,
        )
        position_ids = adapter.continuation_positions(
            model, mask, prefix["input_ids"].shape[1], rows
        )
        head.set_targets(completion_ids[:, 1:])  # tail position j predicts token j + 1
        rest = model(
            input_ids=completion_ids,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        ).logits  # [N, T - 1]
    logps = torch.cat([first, rest], dim=1)
    return TokenScores(logps, torch.cat(head.entropies, dim=1)) if with_entropy else logps


def group_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[PreparedPrompt],
    group_size: int,
    completion_ids: torch.Tensor,  # [B*G, T]
    completion_mask: torch.Tensor,  # [B*G, T]
    rows: range,
    pad_token_id: int,
    temperature: float = 1.0,
    image_features: Any = None,
    share_prefix: bool = False,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
) -> torch.Tensor | TokenScores:
    """Log-probs ``[len(rows), T]`` of ``rows`` of a grouped batch, where row r continues
    ``prompts[r // group_size]``: through :func:`shared_prefix_logprobs` (each prompt once)
    when ``share_prefix``, else :func:`completion_logprobs`. ``image_features`` is a
    ``SharedImageFeatures`` of ``prompts`` or None. Both paths give the same numbers
    (tests/unit/policy/test_image_features.py). ``chunk_tokens``: most tokens whose logits
    exist at once (``policy.scoring_head``); ``with_entropy``: return :class:`TokenScores`."""
    args = (
        completion_ids[rows.start : rows.stop],
        completion_mask[rows.start : rows.stop],
        pad_token_id,
        temperature,
    )
    groups = [row // group_size for row in rows]
    if share_prefix:
        unique = sorted(set(groups))
        return shared_prefix_logprobs(
            model,
            [prompts[u] for u in unique],
            [unique.index(g) for g in groups],
            *args,
            image_features=image_features.for_rows(unique) if image_features is not None else None,
            chunk_tokens=chunk_tokens,
            with_entropy=with_entropy,
        )
    return completion_logprobs(
        model,
        [prompts[g] for g in groups],
        *args,
        image_features=image_features.for_rows(groups) if image_features is not None else None,
        chunk_tokens=chunk_tokens,
        with_entropy=with_entropy,
    )
