import pytest

from vlm_r1.config import ConfigError, TrainConfig, load_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


BASE = "data: {train: x.jsonl}\n"


def test_defaults_follow_the_vlm_r1_recipe(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert isinstance(config, TrainConfig)
    assert config.rollout.num_generations == 8 and config.algo.beta == 0.04
    assert (
        config.optim.learning_rate == 1e-6 and config.algo.epsilon_high == config.algo.epsilon_low
    )


def test_dotted_overrides_and_types(tmp_path):
    config = load_config(
        write(tmp_path, BASE),
        [
            "algo.beta=0",
            "algo.loss_type=dapo",
            "model.lora.enabled=true",
            "rollout.max_prompt_length=none",
            "optim.learning_rate=3e-4",
            "rewards=[{name: rec_acc, params: {threshold: 0.7}}]",
        ],
    )
    assert config.algo.beta == 0.0 and config.algo.loss_type == "dapo" and config.model.lora.enabled
    assert config.optim.learning_rate == 3e-4 and config.rewards[0].params == {"threshold": 0.7}


@pytest.mark.parametrize(
    "override, message",
    [
        (["algo.loss_type=ppo"], r"algo.loss_type='ppo' is not allowed; choose one of .*'grpo'"),
        (["algo.bta=0"], r"unknown config key 'algo.bta' \(did you mean 'beta'\?\)"),
        (["rollout.num_generations=1"], r"num_generations=1 must be >= 2"),
        (["optim.max_steps=ten"], r"optim.max_steps='ten' must be an integer"),
        (["model.freeze_vision=maybe"], r"must be true or false"),
        (["algo.scale_rewards=std"], r"algo.scale_rewards='std' is not allowed"),
        (["rollout.backend=sglang"], r"rollout.backend='sglang' is not allowed; .*'vllm'"),
        (["rollout.vllm_gpu_memory_utilization=1.5"], r"must be in \(0, 1\)"),
        (["speed.share_prompt_prefix=sometimes"], r"must be true or false"),
    ],
)
def test_bad_values_name_the_key_and_choices(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, BASE), override)


def test_missing_file_and_missing_data(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="data.train is required"):
        load_config(write(tmp_path, "seed: 1\n"))


@pytest.mark.parametrize(
    "override, message",
    [
        (["rewards=[{name: iou_reward}]"], r"rewards\[0\]: unknown reward 'iou_reward'"),
        (["rewards=[{name: rec_iuo}]"], r"did you mean 'rec_iou'\?"),
        (["rewards=[{name: rec_acc, params: {thresh: 1}}]"], r"no parameter 'thresh'"),
        (
            ['rewards=[{name: format}, {name: ap, params: {strict: "false"}}]'],
            r"rewards\[1\]: reward 'ap' parameter 'strict' must be bool, not str",
        ),
        (["rewards=[{name: accuracy, params: {method: rec_iuo}}]"], r"rewards\[0\]: .*'rec_iuo'"),
    ],
)
def test_reward_names_are_resolved_by_the_registry(tmp_path, override, message):
    """config.py knows no reward names; the registry resolves them when training starts
    (``GRPOTrainer.setup`` builds the rewards before reading data or loading the model)."""
    from vlm_r1.rewards import RewardConfigError
    from vlm_r1.rl.scoring import build_rewards

    config = load_config(write(tmp_path, BASE), override)
    with pytest.raises(RewardConfigError, match=message):
        build_rewards(config.rewards)


def test_config_choices_are_the_registries():
    """The ``Literal`` choices written in config.py list exactly the registered entries."""
    import typing

    from vlm_r1.config import AlgoConfig
    from vlm_r1.rl.advantages import ADVANTAGES
    from vlm_r1.rl.losses import LOSSES

    hints = typing.get_type_hints(AlgoConfig)
    assert set(typing.get_args(hints["loss_type"])) == set(LOSSES)
    assert set(typing.get_args(hints["scale_rewards"])) == set(ADVANTAGES)
