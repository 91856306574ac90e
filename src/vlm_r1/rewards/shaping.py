"""Shaping rewards: cosine length scaling and n-gram repetition penalty."""

from __future__ import annotations

import math
from typing import Any

from vlm_r1.rewards.common import ctx_item
from vlm_r1.rewards.registry import call_reward, register_reward, resolve_reward


@register_reward("length_cosine", low=-1.0, high=1.0)
def length_cosine(
    completions: list[str],
    solutions: list[Any],
    *,
    accuracy: str = "default",
    correct_threshold: float = 0.5,
    max_length: int = 1000,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    **ctx: Any,
) -> list[float]:
    """Cosine-scaled length reward (Yeo et al. 2025, "Demystifying Long CoT Reasoning", eq. 1).

    Correct answers earn more when short, wrong ones are penalised less when long:
    ``r = lo + (hi - lo) * (1 + cos(pi * L / max_length)) / 2`` with (lo, hi) =
    (min_value_correct, max_value_correct) if correct, else (max_value_wrong, min_value_wrong).
    Correctness comes from the ``accuracy`` reward actually run on the completions (VLM-R1's
    version overwrote that accuracy with a constant). ``L`` is the token count from
    ``ctx["completion_lengths"]`` when the trainer provides it, else the character count.
    """
    acc = call_reward(resolve_reward(accuracy), completions, solutions, **ctx).scores
    out = []
    for i, (completion, a) in enumerate(zip(completions, acc, strict=True)):
        length = ctx_item(ctx, "completion_lengths", i, len(completion))
        progress = min(float(length), float(max_length)) / max(max_length, 1)
        cosine = math.cos(progress * math.pi)
        lo, hi = (
            (min_value_correct, max_value_correct)
            if a >= correct_threshold
            else (max_value_wrong, min_value_wrong)
        )
        out.append(lo + 0.5 * (hi - lo) * (1.0 + cosine))
    return out


@register_reward("repetition", low=-1.0, high=0.0)
def repetition(
    completions: list[str],
    solutions: list[Any],
    *,
    ngram_size: int = 3,
    max_penalty: float = -1.0,
    **ctx: Any,
) -> list[float]:
    """``max_penalty * (1 - distinct n-grams / n-grams)`` over words (Open-R1's definition)."""
    if max_penalty > 0:
        raise ValueError(f"repetition max_penalty must be <= 0, got {max_penalty}")
    out = []
    for completion in completions:
        words = completion.lower().split()
        grams = [tuple(words[i : i + ngram_size]) for i in range(len(words) - ngram_size + 1)]
        if not grams:
            out.append(0.0)
            continue
        out.append(max_penalty * (1.0 - len(set(grams)) / len(grams)))
    return out
