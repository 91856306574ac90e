"""The ``accuracy`` dispatcher never imports code or calls the judge because a sample asked;
``call_reward`` turns bad custom outputs into logged zeros."""

import logging
import math

import pytest

from vlm_r1.rewards import REWARDS, RewardConfigError, RewardSpec, call_reward, resolve_reward


@pytest.fixture()
def payload(tmp_path):
    marker = tmp_path / "PWNED"
    script = tmp_path / "evil.py"
    script.write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "def fn(completions, solutions, **ctx):\n    return [0.5] * len(completions)\n"
    )
    return f"{script}:fn", marker


def test_dispatcher_refuses_a_per_sample_custom_method(payload):
    method, marker = payload
    with pytest.raises(RewardConfigError, match="not declared"):
        call_reward(
            resolve_reward("accuracy"),
            ["<answer>a</answer>", "<answer>b</answer>"],
            ["a", "b"],
            accu_reward_method=[None, method],
        )
    assert not marker.exists()


def test_dispatcher_runs_a_custom_method_the_config_bound(payload):
    method, marker = payload
    spec = resolve_reward("accuracy", allowed_methods=[method])
    out = call_reward(
        spec, ["x", "<answer>b</answer>"], ["a", "b"], accu_reward_method=[method, None]
    )
    assert out.scores == [0.5, 1.0] and marker.exists()
    # accuracy's own configured method needs no separate declaration
    out = call_reward(
        resolve_reward("accuracy", method=method), ["x"], ["a"], accu_reward_method=[method]
    )
    assert out.scores == [0.5]


@pytest.fixture()
def judge_spy(monkeypatch):
    calls = []

    def spy(completions, solutions, **ctx):
        calls.append(len(completions))
        return [1.0] * len(completions)

    monkeypatch.setitem(REWARDS, "llm_judge", RewardSpec("llm_judge", spy, 0.0, 1.0))
    return calls


@pytest.mark.parametrize("method", ["llm", "llm_judge"])
def test_dispatcher_never_calls_the_judge_unless_the_config_enabled_it(judge_spy, method):
    with pytest.raises(RewardConfigError, match="llm_judge"):
        call_reward(resolve_reward("accuracy"), ["x"], ["y"], accu_reward_method=[method])
    assert judge_spy == []
    spec = resolve_reward("accuracy", allowed_methods=["llm_judge"])
    assert call_reward(spec, ["x"], ["y"], accu_reward_method=[method]).scores == [1.0]
    assert judge_spy == [1]


def test_dispatcher_refuses_to_dispatch_to_itself():
    with pytest.raises(RewardConfigError, match="'accuracy'"):
        call_reward(
            resolve_reward("accuracy", allowed_methods=["accuracy"]),
            ["x"],
            ["y"],
            accu_reward_method=["accuracy"],
        )


def custom(values):
    return RewardSpec("my:reward", lambda c, s, **ctx: values, -math.inf, math.inf, builtin=False)


def test_a_custom_reward_returning_none_scores_zero_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="vlm_r1.rewards.registry"):
        out = call_reward(custom(None), ["a", "b"], [None, None])
    assert out.scores == [0.0, 0.0]
    assert "my:reward" in caplog.text and "None" in caplog.text


def test_bad_values_are_counted_and_warned_once_per_reward(caplog):
    spec = RewardSpec(
        "counted:reward",
        lambda c, s, **ctx: [None, math.nan, "abc", math.inf, 0.5],
        -math.inf,
        math.inf,
        builtin=False,
    )
    with caplog.at_level(logging.WARNING, logger="vlm_r1.rewards.registry"):
        out = call_reward(spec, ["a"] * 5, [None] * 5)
        assert out.scores == [0.0, 0.0, 0.0, 0.0, 0.5]
        assert out.details[0]["invalid"] == "None" and out.details[2]["invalid"] == "non-numeric"
        first = [r for r in caplog.records if "counted:reward" in r.getMessage()]
        assert len(first) == 1
        message = first[0].getMessage()
        assert "1 None" in message and "2 non-finite" in message and "1 non-numeric" in message
        call_reward(spec, ["a"] * 5, [None] * 5)
    assert len([r for r in caplog.records if "counted:reward" in r.getMessage()]) == 1
