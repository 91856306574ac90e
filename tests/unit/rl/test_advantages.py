import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm_r1.rl.advantages import ADVANTAGES, EPS, step_advantages, zero_variance_groups


def naive(rewards: list[float], g: int, scale: str, everything: list[float] | None = None):
    """Loops; ``everything`` is the global batch (all processes' rewards) for ``batch``."""
    out = []
    everything = rewards if everything is None else everything
    batch_std = statistics.stdev(everything) if len(everything) > 1 else 0.0
    for start in range(0, len(rewards), g):
        group = rewards[start : start + g]
        mean = sum(group) / g
        std = statistics.stdev(group)
        for r in group:
            if scale == "group":
                out.append((r - mean) / (std + EPS))
            elif scale == "batch":
                out.append((r - mean) / (batch_std + EPS))
            else:
                out.append(r - mean)
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6), st.integers(1, 5), st.sampled_from(sorted(ADVANTAGES)), st.data())
def test_matches_naive_loops(g, b, scale, data):
    rewards = data.draw(st.lists(st.floats(-5, 5, allow_nan=False), min_size=g * b, max_size=g * b))
    got = ADVANTAGES[scale](torch.tensor(rewards, dtype=torch.float64), g)
    assert got.tolist() == pytest.approx(naive(rewards, g, scale), rel=1e-9, abs=1e-9)


def test_constant_groups_have_zero_advantage_and_are_flagged():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.5])
    for fn in ADVANTAGES.values():
        assert fn(rewards, 3)[:3].abs().max() == 0
    assert zero_variance_groups(rewards, 3).tolist() == [True, False]


def test_hand_computed_group():
    # rewards 0, 1 -> mean 0.5, unbiased std 0.7071
    got = ADVANTAGES["group"](torch.tensor([0.0, 1.0]), 2)
    assert got.tolist() == pytest.approx([-0.5 / (2**-0.5 + EPS), 0.5 / (2**-0.5 + EPS)])
    with pytest.raises(ValueError, match="multiple of 3"):
        ADVANTAGES["group"](torch.zeros(4), 3)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 5),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from(sorted(ADVANTAGES)),
    st.data(),
)
def test_global_rewards_set_the_batch_statistics(g, local_groups, other_groups, scale, data):
    """A process holding some groups of a larger global batch: ``batch`` divides by the std of
    the global batch (loop reference); ``group``/``none`` ignore it."""
    floats = st.floats(-5, 5, allow_nan=False)
    local = data.draw(st.lists(floats, min_size=g * local_groups, max_size=g * local_groups))
    other = data.draw(st.lists(floats, min_size=g * other_groups, max_size=g * other_groups))
    everything = other[: g * (other_groups // 2)] + local + other[g * (other_groups // 2) :]
    got = ADVANTAGES[scale](
        torch.tensor(local, dtype=torch.float64),
        g,
        global_rewards=torch.tensor(everything, dtype=torch.float64),
    )
    expected = naive(local, g, scale, everything)
    assert got.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_batch_scaling_is_independent_of_the_split():
    """Hand-computed: global rewards [0, 1, 0, 0, 1, 1, 0, 0], G = 2, std = sqrt(2/7)."""
    everything = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    one_process = ADVANTAGES["batch"](everything, 2)
    halves = [
        step_advantages(ADVANTAGES["batch"], part, 2, FakeAccelerator(everything))
        for part in everything.chunk(2)
    ]
    std = math.sqrt(15 / 8 / 7)  # 3 ones in 8: squared deviations sum to 8 (3/8)(5/8) = 15/8
    assert one_process.tolist() == pytest.approx(
        [-0.5 / (std + EPS), 0.5 / (std + EPS), 0, 0, 0, 0, 0, 0]
    )
    assert torch.cat(halves).tolist() == pytest.approx(one_process.tolist(), rel=1e-12)
    # Each half alone would divide by its own std (the old behaviour): a different answer.
    assert ADVANTAGES["batch"](everything[:4], 2).tolist() != pytest.approx(
        one_process[:4].tolist()
    )


class FakeAccelerator:
    """What ``step_advantages`` needs of an accelerate.Accelerator: gather returns the global
    batch (the real all-gather is covered by test_advantages_distributed)."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self, everything):
        self.everything = everything

    def gather(self, tensor):
        return self.everything
