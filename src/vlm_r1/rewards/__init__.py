"""Rule-based rewards for R1-style RL: a registry of functions with one signature."""

from vlm_r1.rewards.registry import (
    REWARDS,
    VLM_R1_METHODS,
    RewardConfigError,
    RewardOutput,
    RewardSpec,
    call_reward,
    get_spec,
    register_reward,
    resolve_reward,
    reward_names,
)

__all__ = [
    "REWARDS",
    "VLM_R1_METHODS",
    "RewardConfigError",
    "RewardOutput",
    "RewardSpec",
    "call_reward",
    "get_spec",
    "register_reward",
    "resolve_reward",
    "reward_names",
]
