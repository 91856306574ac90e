import pytest

from vlm_r1.policy.sampling import PromptSampler


def test_ranks_partition_each_step_and_resume_continues():
    single = PromptSampler(10, seed=3)
    ranks = [PromptSampler(10, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(7):  # crosses epoch boundaries
        whole = single.take(4)
        parts = ranks[0].take(4) + ranks[1].take(4)
        assert whole == parts
    resumed = PromptSampler(10, seed=3)
    resumed.load_state_dict(single.state_dict())
    assert resumed.take(4) == single.take(4)


def test_each_epoch_is_a_permutation_and_seeds_are_stable():
    s = PromptSampler(6, seed=0)
    epoch = [i for _, i in s.take(6)]
    assert sorted(epoch) == list(range(6))
    assert s.generation_seed(5) == PromptSampler(6, seed=0, rank=1, world_size=2).generation_seed(5)
    assert s.generation_seed(5) != s.generation_seed(6)
    with pytest.raises(ValueError, match="split evenly"):
        PromptSampler(6, 0, world_size=4).take(6)
