"""Policy-gradient losses for GRPO and its variants (pure: torch only).

Per token t of completion i, with ratio ``rho = exp(logp - logp_old)`` and advantage ``A_i``:

    L_it = -min(rho * A_i, clip(rho, 1 - eps_low, 1 + eps_high) * A_i) + beta * w_it * KL_it
    KL_it = k3(d) = exp(d) - d - 1,  d = logp_ref - logp   (k3 estimator, Schulman 2020),
            continued linearly by its tangent at c for d > c (see ``k3_kl``);
    w_it  = exp(logp - logp_old) with ``kl_bias_correction`` (TRL ``use_bias_correction_kl``),
            else 1.

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

``eps_high > eps_low`` is DAPO's clip-higher. The linear continuation above c keeps exp()
finite when the policy drifts far below the reference (VLM-R1 users hit NaN from this) while
still pulling those tokens back. ``num_sequences`` is the number of sequences in the whole step,
so grad accumulation yields the step's mean. A step whose completions are all masked gives
loss 0 and gradient 0 in every variant.

High-entropy token selection (Wang et al. 2025, "Beyond the 80/20 rule", arXiv 2506.01939; TRL's
``top_entropy_quantile``): with an ``entropy_mask`` only the selected tokens keep their
policy-gradient term; the KL term and every normaliser still count all completion tokens, so
the loss scale does not jump with the quantile (as in TRL's GRPOTrainer).
"""

from __future__ import annotations

import math
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
    entropy_mask: torch.Tensor | None = None  # [N, T] 1: the policy-gradient term counts


@dataclass(frozen=True)
class LossSettings:
    beta: float = 0.0
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    kl_clamp: float = 10.0  # c: k3 is exact for d <= c, linear (its tangent at c) above
    kl_bias_correction: bool = False  # multiply the per-token KL by pi / pi_old
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
    """Per-token k3 estimate of KL(policy || ref) (Schulman 2020, "Approximating KL divergence"),
    continued linearly above ``c = clamp`` so that it can neither overflow nor stop pulling.

    With ``d = logp_ref - logp`` and ``k3(d) = exp(d) - d - 1``::

        KL(d) = k3(d)                                   for d <= c   (exact; exp(d) <= exp(c))
        KL(d) = k3(c) + (exp(c) - 1) * (d - c)          for d >  c   (tangent of k3 at c)

    ``dKL/dlogp = -(exp(min(d, c)) - 1)``: the exact k3 gradient up to c, then the tangent's
    constant slope, so a token far *below* the reference (large d) is still pushed back up. For
    ``d -> -inf`` exp(d) underflows harmlessly to 0 and the gradient tends to 1. The function
    is convex and C^1, and >= 0 (k3 >= 0 and the tangent of a convex function >= 0 at c > 0).

    c is capped at ``log(max finite value of the dtype) / 2`` (44.4 in float32), so a huge
    ``clamp`` cannot bring back the overflow: exp(c) and the slope stay finite.
    """
    c = min(float(clamp), math.log(torch.finfo(logps.dtype).max) / 2)
    delta = ref_logps - logps
    # Exact branch (gradient 1 up to and including d = c, 0 above; torch.clamp's is 0 at d = c).
    inside = torch.where(delta <= c, delta, torch.full_like(delta, c))
    slope = math.expm1(c)  # k3'(c) = exp(c) - 1
    return torch.exp(inside) - inside - 1.0 + slope * torch.relu(delta - c)


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
    if x.entropy_mask is not None:
        loss = loss * x.entropy_mask.to(loss.dtype)
    if s.beta > 0:
        if x.ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        kl = k3_kl(x.logps, x.ref_logps, s.kl_clamp)
        if s.kl_bias_correction:
            # TRL (v1.16 GRPOTrainer._compute_loss, use_bias_correction_kl): per_token_kl *= coef_1,
            # the ratio *with* its gradient, and the logged "kl" is this corrected value. Token
            # level here for every variant (TRL broadcasts GSPO's sequence weight instead): the
            # unbiased reverse-KL gradient property holds at token level.
            kl = kl * torch.exp(x.logps - x.old_logps)
        loss = loss + s.beta * kl
        metrics["kl"] = _masked_mean(kl.detach(), mask)
    return loss, metrics


def high_entropy_mask(
    entropy: torch.Tensor, mask: torch.Tensor, top_quantile: float
) -> torch.Tensor:
    """``[N, T]`` 1 for the counted tokens (``mask``) whose entropy is at least the
    ``1 - top_quantile`` quantile of the counted tokens' entropies (linear interpolation, as
    ``torch.quantile``), else 0. ``top_quantile = 1`` keeps every counted token; ties at the
    threshold are all kept. No counted token: all zeros."""
    counted = mask.bool()
    values = entropy[counted].double()
    if top_quantile >= 1.0 or values.numel() == 0:
        return counted.to(entropy.dtype)
    threshold = torch.quantile(values, 1.0 - top_quantile)
    return (counted & (entropy.double() >= threshold)).to(entropy.dtype)


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
    # A step with no unmasked token (e.g. mask_truncated and every completion truncated) has
    # num_tokens = 0 and a zero numerator: divide by 1 then (loss 0, gradient 0, not 0/0 = NaN).
    # A positive num_tokens is kept as is: it is a mean over processes and may be below 1.
    if s.num_tokens is not None:
        tokens = float(s.num_tokens) if s.num_tokens > 0 else 1.0
    else:
        tokens = mask.sum().clamp(min=1.0)
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
