"""Every loss against a naive per-token reference written with Python loops, values and gradients."""

import math

import pytest
import torch

from vlm_r1.rl.losses import LOSSES, LossInputs, LossSettings, k3_kl


def naive_loss(name, logps, old, ref, adv, mask, s: LossSettings, n_seq, n_tok):
    """Loops over sequences and tokens; written from the formulas, not from the implementation."""
    total = 0.0
    count_tokens = 0.0
    seq_terms = []
    for i in range(logps.shape[0]):
        tokens = [t for t in range(logps.shape[1]) if mask[i, t] > 0]
        if name == "gspo":
            mean_log_ratio = sum(logps[i, t] - old[i, t] for t in tokens) / max(len(tokens), 1)
            s_i = math.exp(float(mean_log_ratio.detach()))
        terms = []
        for t in tokens:
            if name == "gspo":
                ratio = s_i * torch.exp(logps[i, t] - logps[i, t].detach())
            else:
                ratio = torch.exp(logps[i, t] - old[i, t])
            a = adv[i]
            clipped = torch.clamp(ratio, 1 - s.epsilon_low, 1 + s.epsilon_high)
            term = -torch.minimum(ratio * a, clipped * a)
            if s.beta > 0:
                d = torch.clamp(ref[i, t] - logps[i, t], -s.kl_clamp, s.kl_clamp)
                term = term + s.beta * (torch.exp(d) - d - 1)
            terms.append(term)
        seq_terms.append(terms)
        count_tokens += len(tokens)
    if name in ("grpo", "gspo"):
        for terms in seq_terms:
            if terms:
                total = total + sum(terms) / len(terms)
        return total / n_seq
    flat = sum((sum(terms) for terms in seq_terms if terms), torch.zeros(()))
    if name == "bnpo":
        return flat / max(count_tokens, 1) * logps.shape[0] / n_seq
    if name == "dr_grpo":
        return flat / (n_seq * s.max_completion_length)
    if name == "dapo":
        return flat / n_tok
    raise AssertionError(name)


def random_inputs(seed, n=5, t=7):
    g = torch.Generator().manual_seed(seed)
    base = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    logps = (base + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)).requires_grad_(True)
    old = base + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)
    ref = base + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).double()
    return logps, old, ref, adv, mask


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.2, 0.28)])
@pytest.mark.parametrize("seed", range(4))
def test_loss_and_gradient_match_naive(name, beta, eps, seed):
    logps, old, ref, adv, mask = random_inputs(seed)
    s = LossSettings(
        beta=beta,
        epsilon_low=eps[0],
        epsilon_high=eps[1],
        max_completion_length=7,
        num_sequences=8,
        num_tokens=float(mask.sum() + 3),
    )
    loss, metrics = LOSSES[name](LossInputs(logps, old, adv, mask, ref if beta else None), s)
    (grad,) = torch.autograd.grad(loss, logps)
    expected = naive_loss(name, logps, old, ref, adv, mask, s, 8, float(mask.sum() + 3))
    (expected_grad,) = torch.autograd.grad(expected, logps)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-10, abs=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)
    assert 0 <= float(metrics["clip_low"]) <= 1 and 0 <= float(metrics["clip_high"]) <= 1


def test_on_policy_grpo_gradient_is_the_policy_gradient():
    """With mu = 1 (old = logps), the surrogate's gradient is -A * grad(logp) / |y| / N."""
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -0.7]], requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, _ = LOSSES["grpo"](LossInputs(logps, logps.detach(), adv, mask), LossSettings())
    loss.backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[-0.25, -0.25], [1.0, 0.0]]))


def test_k3_kl_is_zero_at_equality_positive_and_finite_under_extreme_drift():
    logps = torch.tensor([-1.0, -100.0, -0.1])
    ref = torch.tensor([-1.0, -0.1, -80.0])
    kl = k3_kl(logps, ref, clamp=10.0)
    assert kl[0] == 0 and (kl >= 0).all() and torch.isfinite(kl).all()
    assert not torch.isfinite(k3_kl(logps, ref, clamp=1e9)).all()  # the clamp is what saves us


def test_clip_fractions_count_the_right_tokens():
    logps = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
    old = torch.zeros(1, 3)
    s = LossSettings(epsilon_low=0.2, epsilon_high=0.2)
    _, pos = LOSSES["grpo"](LossInputs(logps, old, torch.tensor([1.0]), torch.ones(1, 3)), s)
    _, neg = LOSSES["grpo"](LossInputs(logps, old, torch.tensor([-1.0]), torch.ones(1, 3)), s)
    assert float(pos["clip_high"]) == pytest.approx(1 / 3) and float(pos["clip_low"]) == 0
    assert float(neg["clip_low"]) == pytest.approx(1 / 3) and float(neg["clip_high"]) == 0
