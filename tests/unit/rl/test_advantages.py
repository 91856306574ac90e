import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm_r1.rl.advantages import ADVANTAGES, EPS, zero_variance_groups


def naive(rewards: list[float], g: int, scale: str) -> list[float]:
    out = []
    batch_std = statistics.stdev(rewards) if len(rewards) > 1 else 0.0
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
