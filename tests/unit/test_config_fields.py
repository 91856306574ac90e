"""Every numeric config field, given 0, -1, NaN or infinity, is either accepted or refused with
one line naming the key, at load time (before any model). The accepted ones must then run:
tests/integration/test_config_edge_values.py trains with each."""

import pytest
from config_walk import accepted_edge_values, numeric_keys

from vlm_r1.config import ConfigError, TrainConfig, load_config
from vlm_r1.sft import SFTConfig


@pytest.mark.parametrize("cls", [TrainConfig, SFTConfig])
def test_every_numeric_field_refuses_bad_edge_values_by_name(cls):
    assert len(numeric_keys(cls)) >= 20  # the walk really found the fields
    accepted = accepted_edge_values(cls)
    # Non-finite numbers are never accepted; negative numbers nowhere either.
    assert not [a for a in accepted if a[1] != "0"], accepted


@pytest.mark.parametrize(
    "override, message",
    [
        ("checkpoint.save_steps=0", "checkpoint.save_steps=0 must be >= 1"),
        ("logging.log_steps=0", "logging.log_steps=0 must be >= 1"),
        ("optim.max_grad_norm=-1", "optim.max_grad_norm=-1.0 must be >= 0"),
        ("algo.beta=.inf", "algo.beta=inf must be a finite number"),
        ("optim.learning_rate=nan", "optim.learning_rate=nan must be a finite number"),
        ("optim.adam_beta2=1", "optim.adam_beta2=1.0 must be in [0, 1)"),
        ("algo.epsilon_low=1.5", "algo.epsilon_low=1.5 must be in (0, 1)"),
        ("seed=-1", "seed=-1 must be in [0, 4294967295]"),
        ("model.dtype=fp8", "model.dtype='fp8' is not allowed"),
        ("rollout.num_generations=1", "rollout.num_generations=1 must be >= 2"),
        ("rewards=[{name: format, weight: .nan}]", "rewards[0].weight=nan must be a finite"),
        ("model.min_pixels=100", None),  # alone it is fine
        ("checkpoint.resume=auto", None),
    ],
)
def test_issue_cases_fail_at_load_naming_the_key(override, message):
    if message is None:
        load_config(None, ["data.train=x.jsonl", override])
        return
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, ["data.train=x.jsonl", override])
    assert message in str(info.value)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="model.min_pixels=200 is larger than model.max_pixels"):
        load_config(None, ["data.train=x", "model.min_pixels=200", "model.max_pixels=100"])
    with pytest.raises(ConfigError, match="contradict"):
        load_config(None, ["data.train=x", "checkpoint.overwrite=true", "checkpoint.resume=auto"])


def test_configs_built_in_code_are_checked_too():
    """The demo builds configs as dataclasses: ``validate()`` applies the same field rules."""
    from vlm_r1.config import DataConfig, OptimConfig

    config = TrainConfig(data=DataConfig(train="x"), optim=OptimConfig(learning_rate=float("nan")))
    with pytest.raises(ConfigError, match="optim.learning_rate=nan"):
        config.validate()
