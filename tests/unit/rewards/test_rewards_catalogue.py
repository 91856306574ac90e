import math
import re
import textwrap

import pytest

from vlm_r1.rewards import RewardConfigError, call_reward, resolve_reward
from vlm_r1.rewards.format import is_lenient_format, is_strict_format


def scores(name, completions, solutions, **params):
    ctx = params.pop("ctx", {})
    return call_reward(resolve_reward(name, **params), completions, solutions, **ctx).scores


def test_format_strict_and_lenient():
    good = "<think>I see it</think>\n<answer>[1, 2, 3, 4]</answer>"
    assert scores(
        "format", [good, "text " + good, good + " trailing", "<answer>x</answer>"], [None] * 4
    ) == [1, 0, 0, 0]
    assert scores(
        "format_lenient",
        [good, "text " + good, good + " trailing", "<answer>x</answer>"],
        [None] * 4,
    ) == [1, 1, 1, 0]


def test_linear_format_check_equals_the_vlm_r1_regex():
    import random

    regex = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
    lenient = re.compile(r"<think>.*?</think>.*?<answer>.*?</answer>", re.DOTALL)
    rng = random.Random(0)
    tokens = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "x", ""]
    for _ in range(20000):
        s = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 9)))
        assert is_strict_format(s) == bool(regex.fullmatch(s.strip())), s
        assert is_lenient_format(s) == bool(lenient.search(s)), s


def test_mcq_and_yes_no():
    assert scores(
        "mcq",
        ["<answer>B</answer>", "<answer>(C) the cat</answer>", "<answer>none</answer>"],
        ["B", "<answer>C</answer>", "A"],
    ) == [1, 1, 0]
    assert scores(
        "yes_no",
        ["<answer>Yes, it is.</answer>", "no", "<answer>maybe</answer>"],
        ["yes", "No", "yes"],
    ) == [1, 1, 0]


def test_numeric_count_math():
    assert scores(
        "numeric",
        ["<answer>3.14</answer>", "<answer>1,000</answer>", "<answer>7</answer>"],
        ["3.14", "1000", "8"],
    ) == [1, 1, 0]
    assert scores("numeric", ["<answer>7</answer>"], ["8"], abs_tol=1.0) == [1]
    assert scores(
        "count", ["<think>3 red</think><answer>4</answer>", "<answer>none</answer>"], ["4", "2"]
    ) == [1, 0]
    assert scores("count", ["<answer>3</answer>"], ["4"], partial=True) == [pytest.approx(0.75)]
    assert scores(
        "math",
        ["<answer>$\\frac{1}{2}$</answer>", "<answer>0.5</answer>", "<answer>2</answer>"],
        ["0.5", "$\\frac{1}{2}$", "3"],
    ) == [1, 1, 0]


def test_text_rewards():
    assert scores("fuzzy_text", ["<answer>A red car.</answer>"], ["a red car"]) == [1.0]
    assert 0 < scores("fuzzy_text", ["<answer>a red bus</answer>"], ["a red car"])[0] < 1
    assert scores(
        "all_match",
        ["<answer>dog, cat</answer>", '<answer>["cat", "dog"]</answer>', "<answer>cat</answer>"],
        ["cat, dog"] * 3,
    ) == [1, 1, 0]


def test_default_dispatch_chain():
    got = scores(
        "default",
        [
            "<answer>\\frac{1}{2}</answer>",
            "<answer>12</answer>",
            "<answer>B</answer>",
            "<answer>a red car</answer>",
        ],
        ["0.5", "13", "B", "a red car"],
    )
    assert got == [1.0, 0.0, 1.0, 1.0]


def test_accuracy_dispatches_per_sample_with_vlm_r1_names():
    completions = [
        "<answer>B</answer>",
        "<answer>yes</answer>",
        '<answer>[{"bbox_2d": [0,0,10,10], "label": "a"}]</answer>',
    ]
    solutions = ["B", "yes", '```json\n[{"bbox_2d": [0,0,10,10], "label": "a"}]\n```']
    out = call_reward(
        resolve_reward("accuracy"),
        completions,
        solutions,
        accu_reward_method=["mcq", "yes_no", "odLength"],
    )
    assert out.scores == [1.0, 1.0, pytest.approx(1.0)]
    assert [d["method"] for d in out.details] == ["mcq", "yes_no", "od_length"]


def test_length_cosine_uses_real_accuracy():
    short_right, long_right = "<answer>4</answer>", "<answer>4</answer>" + " " * 982
    short_wrong = "<answer>5</answer>"
    got = scores(
        "length_cosine", [short_right, long_right, short_wrong], ["4", "4", "4"], max_length=1000
    )
    assert got[0] == pytest.approx(0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi * 18 / 1000)))
    assert got[1] == pytest.approx(0.5, abs=1e-9)
    assert got[2] < -0.9
    tokens = scores("length_cosine", [short_right], ["4"], ctx={"completion_lengths": [1000]})
    assert tokens == [pytest.approx(0.5)]


def test_repetition_penalty():
    got = scores("repetition", ["a b c a b c a b c", "one two three four", ""], [None] * 3)
    # 7 trigrams, 3 distinct -> -(1 - 3/7)
    assert got == [pytest.approx(-(1 - 3 / 7)), 0.0, 0.0]


def test_unknown_reward_and_parameter_fail_clearly():
    with pytest.raises(RewardConfigError, match=r"unknown reward 'iou_reward'.*rec_iou"):
        resolve_reward("iou_reward")
    with pytest.raises(
        RewardConfigError, match=r"reward 'rec_acc' has no parameter 'thresh'.*threshold"
    ):
        resolve_reward("rec_acc", thresh=0.5)


@pytest.mark.parametrize(
    "name, params, message",
    [
        # A quoted YAML boolean is a non-empty string, so it would read as True.
        ("ap", {"strict": "false"}, r"'ap' parameter 'strict' must be bool, not str \('false'\)"),
        ("od_length", {"strict": 0}, r"'od_length' parameter 'strict' must be bool, not int"),
        ("rec_acc", {"threshold": "0.5"}, r"'threshold' must be float, not str"),
        ("rec_acc", {"threshold": True}, r"'threshold' must be float, not bool"),
        ("repetition", {"ngram_size": 2.5}, r"'ngram_size' must be int, not float"),
        ("llm_judge", {"fallback": None}, r"'fallback' must be str \| float, not NoneType"),
        ("accuracy", {"allowed_methods": "rec_acc"}, r"'allowed_methods' must be a list of str"),
        ("accuracy", {"allowed_methods": ["rec_acc", 3]}, r"'allowed_methods' must be a list"),
    ],
)
def test_builtin_reward_parameter_of_the_wrong_type_fails_at_resolve(name, params, message):
    with pytest.raises(RewardConfigError, match=message):
        resolve_reward(name, **params)


def test_builtin_reward_parameters_of_the_right_type_resolve():
    resolve_reward("ap", strict=False)
    resolve_reward("rec_acc", threshold=1)  # an int is a fine float (YAML writes 1, not 1.0)
    resolve_reward("repetition", ngram_size=2)
    resolve_reward("llm_judge", base_url=None, fallback=0.0)
    resolve_reward("llm_judge", fallback="exact")
    resolve_reward("accuracy", allowed_methods=("rec_acc", "ap"))


def test_custom_reward_by_module_and_file(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent("""
        def shortness(completions, solutions, **ctx):
            return [1.0 / (1 + len(c)) for c in completions]
        def broken(completions, solutions, **ctx):
            raise RuntimeError("boom")
        def nan(completions, solutions, **ctx):
            return [float("nan")] * len(completions)
        NOT_CALLABLE = 3
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert scores("my_rewards:shortness", ["abc"], [None]) == [0.25]
    assert scores(f"{tmp_path / 'my_rewards.py'}:shortness", ["a"], [None]) == [0.5]
    broken = call_reward(resolve_reward("my_rewards:broken"), ["x", "y"], [None, None])
    assert broken.scores == [0.0, 0.0] and "RuntimeError: boom" in broken.details[0]["error"]
    assert scores("my_rewards:nan", ["x"], [None]) == [0.0]
    with pytest.raises(RewardConfigError, match="cannot import module 'no_such_mod'"):
        resolve_reward("no_such_mod:fn")
    with pytest.raises(RewardConfigError, match="has no function 'missing'"):
        resolve_reward("my_rewards:missing")
    with pytest.raises(RewardConfigError, match="is not callable"):
        resolve_reward("my_rewards:NOT_CALLABLE")
    with pytest.raises(RewardConfigError, match="does not exist"):
        resolve_reward(f"{tmp_path / 'nope.py'}:fn")
