"""Every loss against a naive per-token reference written with Python loops, values and gradients."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm_r1.rl.losses import LOSSES, LossInputs, LossSettings, high_entropy_mask, k3_kl


def naive_kl(logp, ref, c):
    """k3 below c, its tangent line at c above (one scalar token, explicit branch)."""
    d = ref - logp
    if float(d.detach()) <= c:
        return torch.exp(d) - d - 1
    return (math.exp(c) - c - 1) + (math.exp(c) - 1) * (d - c)


def naive_loss(name, logps, old, ref, adv, mask, s: LossSettings, n_seq, n_tok, emask=None):
    """Loops over sequences and tokens; written from the formulas, not from the implementation.
    ``emask``: the high-entropy selection, which zeroes a token's surrogate term (not its KL)."""
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
            if emask is not None and emask[i, t] == 0:
                term = term * 0.0
            if s.beta > 0:
                kl = naive_kl(logps[i, t], ref[i, t], s.kl_clamp)
                if s.kl_bias_correction:
                    kl = kl * torch.exp(logps[i, t] - old[i, t])
                term = term + s.beta * kl
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
@pytest.mark.parametrize("beta, correction", [(0.0, False), (0.04, False), (0.04, True)])
@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.2, 0.28)])
@pytest.mark.parametrize("seed", range(4))
def test_loss_and_gradient_match_naive(name, beta, correction, eps, seed):
    logps, old, ref, adv, mask = random_inputs(seed)
    s = LossSettings(
        beta=beta,
        epsilon_low=eps[0],
        epsilon_high=eps[1],
        kl_clamp=0.5,  # some tokens of random_inputs lie above c: both branches are covered
        kl_bias_correction=correction,
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
    logps = torch.tensor([-1.0, -100.0, -0.1, -1e4], requires_grad=True)
    ref = torch.tensor([-1.0, -0.1, -80.0, 0.0])
    kl = k3_kl(logps, ref, clamp=10.0)
    (grad,) = torch.autograd.grad(kl.sum(), logps)
    assert kl[0] == 0 and (kl >= 0).all() and torch.isfinite(kl).all()
    assert torch.isfinite(grad).all() and (grad[1:] != 0).all()
    # A huge clamp is capped where exp() would overflow the dtype: still finite.
    huge = k3_kl(logps, ref, clamp=1e9)
    (grad,) = torch.autograd.grad(huge.sum(), logps)
    assert torch.isfinite(huge).all() and torch.isfinite(grad).all()


def exact_k3(d: float) -> float:
    return math.exp(d) - d - 1


@settings(max_examples=300, deadline=None)
@given(st.floats(0.05, 20.0), st.floats(-1.0, 1.0), st.floats(-30.0, 0.0))
def test_k3_kl_is_exact_k3_within_c(c, u, logp):
    """For |d| <= c the value is exp(d) - d - 1 and the gradient -(exp(d) - 1), in float64."""
    d = u * c
    logps = torch.tensor([logp], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([logp + d], dtype=torch.float64)
    kl = k3_kl(logps, ref, c)
    (grad,) = torch.autograd.grad(kl.sum(), logps)
    d = float(ref - logps.detach())  # the d the function sees, rounding included
    assert float(kl.detach()) == pytest.approx(exact_k3(d), rel=1e-12, abs=1e-15)
    assert float(grad) == pytest.approx(-math.expm1(d), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("d", [-1.5, -4.0, -40.0])
def test_k3_kl_gradient_below_minus_c_is_the_analytic_one(d):
    """d = ref - logp < -c (policy far above the reference): no clamp, the exact gradient
    d/dlogp (exp(d) - d - 1) = 1 - exp(d), non-zero (a two-sided clamp made it 0)."""
    logps = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    kl = k3_kl(logps, torch.tensor([d], dtype=torch.float64), clamp=1.0)
    (grad,) = torch.autograd.grad(kl.sum(), logps)
    assert float(kl.detach()) == pytest.approx(exact_k3(d), rel=1e-12)
    assert float(grad) == pytest.approx(1 - math.exp(d), rel=1e-12)
    assert float(grad) > 0  # gradient descent lowers logp, back toward the reference


@pytest.mark.parametrize("d", [1.0 + 1e-9, 2.0, 50.0, 1e4])
def test_k3_kl_above_c_follows_the_tangent(d):
    """d > c: value k3(c) + (e^c - 1)(d - c), gradient -(e^c - 1) w.r.t. logp: finite, non-zero,
    and descent raises logp (back toward the reference)."""
    c = 1.0
    logps = torch.tensor([-d], dtype=torch.float64, requires_grad=True)
    kl = k3_kl(logps, torch.tensor([0.0], dtype=torch.float64), clamp=c)
    (grad,) = torch.autograd.grad(kl.sum(), logps)
    assert float(kl.detach()) == pytest.approx(exact_k3(c) + (math.e - 1) * (d - c), rel=1e-12)
    assert float(grad) == pytest.approx(-(math.e - 1), rel=1e-12)
    assert math.isfinite(float(kl.detach())) and float(grad) < 0


def test_k3_kl_hand_computed_values():
    # c = 1: d = 0 -> 0; d = ln 2 -> 2 - ln 2 - 1; d = -3 -> e^-3 + 2; d = 2 -> (e - 2) + (e - 1).
    d = torch.tensor([0.0, math.log(2), -3.0, 2.0], dtype=torch.float64)
    kl = k3_kl(torch.zeros(4, dtype=torch.float64), d, clamp=1.0)
    expected = [0.0, 1 - math.log(2), math.exp(-3) + 2, 2 * math.e - 3]
    assert kl.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert float(k3_kl(torch.tensor([-3.0]), torch.tensor([0.0]), 1.0)) == pytest.approx(
        (math.e - 2) + 2 * (math.e - 1), rel=1e-6
    )  # d = 3 in float32: k3(1) + (e - 1) * 2


def kl_only(name, logps, old, ref, mask, correction):
    """The loss with zero advantages: only beta * KL remains (beta = 1)."""
    s = LossSettings(beta=1.0, kl_clamp=10.0, kl_bias_correction=correction)
    adv = torch.zeros(logps.shape[0], dtype=logps.dtype)
    return LOSSES[name](LossInputs(logps, old, adv, mask, ref), s)


def test_kl_bias_correction_on_policy_same_value_different_gradient():
    """mu = 1 (old = logp.detach()): the ratio is 1 so the value is unchanged, but it carries
    a gradient (as in TRL): d/dlogp [exp(logp - sg(logp)) k3(d)] = k3(d) - (exp(d) - 1)."""
    logps, _, ref, _, mask = random_inputs(7, n=3, t=4)
    mask = torch.ones_like(mask)
    plain, m_plain = kl_only("bnpo", logps, logps.detach(), ref, mask, False)
    corrected, m_corr = kl_only("bnpo", logps, logps.detach(), ref, mask, True)
    assert float(corrected.detach()) == pytest.approx(float(plain.detach()), rel=1e-12)
    assert float(m_corr["kl"]) == pytest.approx(float(m_plain["kl"]), rel=1e-12)
    (g_plain,) = torch.autograd.grad(plain, logps)
    (g_corr,) = torch.autograd.grad(corrected, logps)
    # Hand-written float64 reference through autograd, token by token.
    reference = (
        sum(
            torch.exp(logps[i, t] - logps[i, t].detach())
            * (torch.exp(ref[i, t] - logps[i, t]) - (ref[i, t] - logps[i, t]) - 1)
            for i in range(3)
            for t in range(4)
        )
        / mask.sum()
    )
    (g_ref,) = torch.autograd.grad(reference, logps)
    torch.testing.assert_close(g_corr, g_ref, rtol=1e-12, atol=1e-15)
    d = (ref - logps).detach()
    torch.testing.assert_close(g_corr, (torch.exp(d) - d - 1 - torch.expm1(d)) / mask.sum())
    torch.testing.assert_close(g_plain, -torch.expm1(d) / mask.sum())
    assert (g_corr - g_plain).abs().min() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_kl_bias_correction_off_policy_value_is_the_product(name):
    """old != logp: the per-token KL is ratio * k3, and the logged kl is that product (TRL)."""
    logps, old, ref, _, mask = random_inputs(3, n=4, t=5)
    loss, metrics = kl_only(name, logps, old, ref, mask, True)
    ratio = torch.exp(logps - old).detach()
    d = (ref - logps).detach()
    product = ratio * (torch.exp(d) - d - 1)
    assert float(metrics["kl"]) == pytest.approx(
        float((product * mask).sum() / mask.sum()), rel=1e-12
    )
    plain, _ = kl_only(name, logps, old, ref, mask, False)
    assert float(loss.detach()) != pytest.approx(float(plain.detach()), rel=1e-6)
    if name == "bnpo":
        expected = (product * mask).sum() / mask.sum()
        assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_masked_step_gives_zero_loss_and_gradient(name):
    """mask_truncated with every completion truncated: no token counts anywhere in the step
    (num_tokens = 0). The loss is 0 with a zero gradient, not NaN."""
    logps, old, ref, adv, mask = random_inputs(1)
    s = LossSettings(beta=0.04, num_sequences=5, num_tokens=0.0)
    loss, _ = LOSSES[name](LossInputs(logps, old, adv, torch.zeros_like(mask), ref), s)
    (grad,) = torch.autograd.grad(loss, logps)
    assert float(loss.detach()) == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))


def test_clip_fractions_count_the_right_tokens():
    logps = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
    old = torch.zeros(1, 3)
    s = LossSettings(epsilon_low=0.2, epsilon_high=0.2)
    _, pos = LOSSES["grpo"](LossInputs(logps, old, torch.tensor([1.0]), torch.ones(1, 3)), s)
    _, neg = LOSSES["grpo"](LossInputs(logps, old, torch.tensor([-1.0]), torch.ones(1, 3)), s)
    assert float(pos["clip_high"]) == pytest.approx(1 / 3) and float(pos["clip_low"]) == 0
    assert float(neg["clip_low"]) == pytest.approx(1 / 3) and float(neg["clip_high"]) == 0


def test_dapo_keeps_a_fractional_token_mean():
    """num_tokens is a mean over processes (1 token on one of 2 ranks -> 0.5): only 0 is guarded."""
    logps = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([1.0], dtype=torch.float64)
    loss, _ = LOSSES["dapo"](
        LossInputs(logps, logps.detach(), adv, mask), LossSettings(num_tokens=0.5)
    )
    assert float(loss.detach()) == pytest.approx(-1.0 / 0.5)


def naive_high_entropy_mask(entropy, mask, q):
    """The counted tokens, sorted; the (1 - q) quantile by linear interpolation between order
    statistics, written out; then a loop keeping tokens at or above it."""
    values = sorted(
        float(entropy[i, t]) for i, t in zip(*torch.nonzero(mask, as_tuple=True), strict=True)
    )
    out = torch.zeros_like(entropy)
    if not values:
        return out
    position = (len(values) - 1) * (1.0 - q)
    low, high = math.floor(position), math.ceil(position)
    threshold = values[low] + (values[high] - values[low]) * (position - low)
    for i in range(entropy.shape[0]):
        for t in range(entropy.shape[1]):
            if mask[i, t] > 0 and (q >= 1.0 or float(entropy[i, t]) >= threshold):
                out[i, t] = 1.0
    return out


@pytest.mark.parametrize("q", [1.0, 0.8, 0.5, 0.2, 0.01])
@pytest.mark.parametrize("seed", range(5))
def test_high_entropy_mask_matches_a_loop(q, seed):
    g = torch.Generator().manual_seed(seed)
    entropy = torch.rand(6, 9, generator=g, dtype=torch.float64) * 4
    entropy[0, :3] = 1.5  # ties at a value
    lengths = torch.randint(0, 10, (6,), generator=g)
    mask = (torch.arange(9)[None, :] < lengths[:, None]).double()
    got = high_entropy_mask(entropy, mask, q)
    expected = naive_high_entropy_mask(entropy, mask, q)
    assert torch.equal(got, expected)
    assert not (got * (1 - mask)).any()  # never a padding token
    if q < 1.0 and mask.sum() > 4:  # it really selects a fraction
        kept = float(got.sum() / mask.sum())
        assert kept < 1.0 and abs(kept - q) <= 1.0 / float(mask.sum()) + 0.15


def test_high_entropy_mask_with_no_counted_token_is_empty():
    entropy = torch.rand(2, 3)
    assert not high_entropy_mask(entropy, torch.zeros(2, 3), 0.2).any()


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_entropy_mask_drops_only_the_surrogate_of_unselected_tokens(name, beta):
    logps, old, ref, adv, mask = random_inputs(3)
    g = torch.Generator().manual_seed(11)
    emask = high_entropy_mask(torch.rand(*mask.shape, generator=g, dtype=torch.float64), mask, 0.3)
    s = LossSettings(beta=beta, max_completion_length=7, num_sequences=8, num_tokens=20.0)
    inputs = LossInputs(logps, old, adv, mask, ref if beta else None, entropy_mask=emask)
    loss, _ = LOSSES[name](inputs, s)
    (grad,) = torch.autograd.grad(loss, logps)
    expected = naive_loss(name, logps, old, ref, adv, mask, s, 8, 20.0, emask=emask)
    (expected_grad,) = torch.autograd.grad(expected, logps)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-10, abs=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)
    unselected = (mask > 0) & (emask == 0)
    if beta == 0:  # no KL: an unselected token gets no gradient at all
        assert unselected.any() and not grad[unselected].any()
