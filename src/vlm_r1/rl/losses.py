"""Policy-gradient losses for GRPO and its variants (pure: torch only).

Per token t of completion i, with ratio ``rho = exp(logp - logp_old)`` and advantage ``A_i``:

    L_it = -min(rho * A_i, clip(rho, 1 - eps_low, 1 + eps_high) * A_i) + beta * KL_it
    KL_it = exp(d) - d - 1,   d = clamp(logp_ref - logp, -c, c)   (k3 estimator, Schulman 2020)

The variants differ in how token losses are aggregated (``mask`` selects completion tokens):

* ``grpo``   (Shao et al. 2024): mean over each sequence's tokens, then mean over sequences;
* ``bnpo``   : mean over all tokens of the micro-batch;
* ``dr_grpo``(Liu et al. 2025): sum over tokens / (sequences x max_completion_length), a
  constant normaliser free of length bias;
* ``dapo``   (Yu et al. 2025): sum over tokens / tokens of the *whole* step (``num_tokens``),
  so accumulation over micro-batches and processes gives the exact global token mean;
* ``gspo``   (Zheng et al. 2025): the ratio is the sequence's length-normalised likelihood ratio
  ``s_i = exp(mean_t(logp - logp_old))``, applied to every token through
  ``sg[s_i] * exp(logp_t - sg[logp_t])`` (GSPO-token), clipped at the sequence level.

``eps_high > eps_low`` is DAPO's clip-higher. The d clamp keeps exp() finite when the policy
drifts far from the reference (VLM-R1 users hit NaN from this). ``num_sequences`` is the
number of sequences in the whole step, so grad accumulation yields the step's mean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossInputs:
    logps: torch.Tensor  # [N, T] policy log-probs of the completion tokens (with grad)
    old_logps: torch.Tensor  # [N, T] log-probs at rollout time (= logps.detach() when mu = 1)
    advantages: torch.Tensor  # [N]
    mask: torch.Tensor  # [N, T] 1 for completion tokens that count
    ref_logps: torch.Tensor | None = None  # [N, T] reference log-probs (beta > 0)


@dataclass(frozen=True)
class LossSettings:
    beta: float = 0.0
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    kl_clamp: float = 10.0
    max_completion_length: int = 1024
    num_sequences: int | None = None  # sequences in the whole step (default: this micro-batch)
    num_tokens: float | None = None  # completion tokens in the whole step (dapo)


LossFn = Callable[[LossInputs, LossSettings], tuple[torch.Tensor, dict[str, torch.Tensor]]]
LOSSES: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    def wrap(fn: LossFn) -> LossFn:
        LOSSES[name] = fn
        return fn

    return wrap


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor, clamp: float) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || ref), with the log-ratio clamped to [-clamp, clamp]."""
    delta = torch.clamp(ref_logps - logps, -clamp, clamp)
    return torch.exp(delta) - delta - 1.0


def _clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, s: LossSettings
) -> torch.Tensor:
    a = advantages.unsqueeze(-1) if ratio.ndim == 2 else advantages  # [N, 1] or [N]
    clipped = torch.clamp(ratio, 1.0 - s.epsilon_low, 1.0 + s.epsilon_high)
    return -torch.minimum(ratio * a, clipped * a)


def _per_token(
    x: LossInputs, s: LossSettings, ratio: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token losses ``[N, T]`` (surrogate + KL) and metrics."""
    mask = x.mask.to(x.logps.dtype)
    loss = _clipped_surrogate(ratio, x.advantages, s)
    metrics = _clip_metrics(ratio.detach(), x.advantages, mask, s)
    if s.beta > 0:
        if x.ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        kl = k3_kl(x.logps, x.ref_logps, s.kl_clamp)
        loss = loss + s.beta * kl
        metrics["kl"] = _masked_mean(kl.detach(), mask)
    return loss, metrics


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _clip_metrics(
    ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, s: LossSettings
) -> dict[str, torch.Tensor]:
    a = advantages.unsqueeze(-1) if ratio.ndim == 2 else advantages
    low = ((ratio < 1.0 - s.epsilon_low) & (a < 0)).to(mask.dtype)
    high = ((ratio > 1.0 + s.epsilon_high) & (a > 0)).to(mask.dtype)
    if ratio.ndim == 1:
        low, high, ratio = (
            low.unsqueeze(-1).expand_as(mask),
            high.unsqueeze(-1).expand_as(mask),
            ratio.unsqueeze(-1).expand_as(mask),
        )
    return {
        "clip_low": _masked_mean(low, mask),
        "clip_high": _masked_mean(high, mask),
        "ratio": _masked_mean(ratio, mask),
    }


def _sequences(x: LossInputs, s: LossSettings) -> float:
    return float(s.num_sequences if s.num_sequences is not None else x.logps.shape[0])


@register_loss("grpo")
def grpo_loss(x: LossInputs, s: LossSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    mask = x.mask.to(x.logps.dtype)
    per_token, metrics = _per_token(x, s, torch.exp(x.logps - x.old_logps))
    per_sequence = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [N]
    return per_sequence.sum() / _sequences(x, s), metrics


@register_loss("bnpo")
def bnpo_loss(x: LossInputs, s: LossSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    mask = x.mask.to(x.logps.dtype)
    per_token, metrics = _per_token(x, s, torch.exp(x.logps - x.old_logps))
    scale = x.logps.shape[0] / _sequences(x, s)  # this micro-batch's share of the step
    return scale * (per_token * mask).sum() / mask.sum().clamp(min=1.0), metrics


@register_loss("dr_grpo")
def dr_grpo_loss(x: LossInputs, s: LossSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    mask = x.mask.to(x.logps.dtype)
    per_token, metrics = _per_token(x, s, torch.exp(x.logps - x.old_logps))
    return (per_token * mask).sum() / (_sequences(x, s) * s.max_completion_length), metrics


@register_loss("dapo")
def dapo_loss(x: LossInputs, s: LossSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    mask = x.mask.to(x.logps.dtype)
    per_token, metrics = _per_token(x, s, torch.exp(x.logps - x.old_logps))
    tokens = s.num_tokens if s.num_tokens is not None else mask.sum().clamp(min=1.0)
    return (per_token * mask).sum() / tokens, metrics


@register_loss("gspo")
def gspo_loss(x: LossInputs, s: LossSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    mask = x.mask.to(x.logps.dtype)
    log_ratio = x.logps - x.old_logps
    seq_log_ratio = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [N]
    # GSPO-token: value = s_i, gradient = s_i * grad(logp_t) / |y_i| after the mean below.
    ratio = torch.exp(seq_log_ratio.detach().unsqueeze(-1) + x.logps - x.logps.detach())  # [N, T]
    per_token, metrics = _per_token(x, s, ratio)
    per_sequence = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_sequence.sum() / _sequences(x, s), metrics
