"""What a reward receives: each row's values under documented names, the row's extra fields,
standard names never overridden by data, and only the keys a reward's signature asks for."""

import logging
import math
from pathlib import Path

import pytest
import torch

from vlm_r1.data.jsonl import RowRules, parse_row
from vlm_r1.data.sample import BoxSolution, Sample
from vlm_r1.models.boxes import BoxSpace
from vlm_r1.policy.prompts import PreparedPrompt
from vlm_r1.rewards import RewardSpec, call_reward, resolve_reward
from vlm_r1.rl import scoring
from vlm_r1.rl.rollout import Rollout
from vlm_r1.rl.scoring import STANDARD_KEYS, WeightedReward, reward_context, score

REC = Sample(
    "rec-1",
    ("/data/a.png",),
    "Where is the red circle?",
    BoxSolution(((1.0, 2.0, 30.0, 40.0),), (None,)),
    "rec",
    None,
    "train.jsonl:1",
    {"difficulty": 3, "split": "train"},
)
QA = Sample(
    "qa-7",
    ("/data/b1.png", "/data/b2.png"),
    "Which image is brighter?",
    "B",
    "qa",
    "mcq",
    "train.jsonl:2",
    {"difficulty": 5, "hint": "compare the means"},
)
SPACE_A = BoxSpace("norm1000", (64, 48))
SPACE_B = BoxSpace("abs_resized", (100, 80), (112, 84))


def prepared(sample, space, size, chat):
    features = {"input_ids": torch.zeros(1, 3, dtype=torch.long)}
    return PreparedPrompt(sample, features, space, size, None, chat)


def rollout_of(prompts, lengths, group_size=2):
    """A rollout whose completion ``i`` has ``lengths[i]`` tokens."""
    width = max(lengths)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    texts = [f"completion {i}" for i in range(len(lengths))]
    return Rollout(
        prompts,
        group_size,
        torch.ones_like(mask),
        mask,
        texts,
        torch.zeros(len(lengths), dtype=torch.bool),
    )


@pytest.fixture()
def rollout():
    prompts = [
        prepared(REC, SPACE_A, (64, 48), "<chat>rec</chat>"),
        prepared(QA, SPACE_B, (100, 80), "<chat>qa</chat>"),
    ]
    return rollout_of(prompts, [3, 5, 1, 4])


def test_context_holds_each_rows_values_per_completion(rollout):
    ctx = reward_context(rollout)
    assert list(ctx)[: len(STANDARD_KEYS)] == list(STANDARD_KEYS)
    twice = lambda a, b: [a, a, b, b]  # noqa: E731 (two prompts, two completions each)
    assert ctx["image_paths"] == twice(["/data/a.png"], ["/data/b1.png", "/data/b2.png"])
    assert ctx["image_sizes"] == twice((64, 48), (100, 80))
    assert ctx["problem"] == twice(REC.question, QA.question)
    assert ctx["prompts"] == twice("<chat>rec</chat>", "<chat>qa</chat>")
    assert ctx["task"] == twice("rec", "qa")
    assert ctx["accu_reward_method"] == twice(None, "mcq")
    assert ctx["box_spaces"] == twice(SPACE_A, SPACE_B)
    assert ctx["completion_lengths"] == [3, 5, 1, 4]
    assert ctx["sample_id"] == twice("rec-1", "qa-7")
    assert ctx["meta"] == twice(REC.meta, QA.meta)
    # every extra field under its own name; rows without it give None
    assert ctx["difficulty"] == [3, 3, 5, 5]
    assert ctx["split"] == ["train", "train", None, None]
    assert ctx["hint"] == [None, None, "compare the means", "compare the means"]
    assert set(ctx) == {*STANDARD_KEYS, "difficulty", "split", "hint"}
    # each completion's meta is its own copy: a reward cannot edit the sample or its group
    ctx["meta"][0]["difficulty"] = 99
    assert REC.meta["difficulty"] == 3 and ctx["meta"][1]["difficulty"] == 3


def test_score_hands_every_reward_that_context_and_the_solutions(rollout):
    seen = {}

    def spy(completions, solutions, **kwargs):
        seen.update(kwargs, completions=completions, solutions=solutions)
        return [float(d) for d in kwargs["difficulty"]]

    reward = WeightedReward("spy", 2.0, RewardSpec("spy", spy, -math.inf, math.inf, False))
    scored = score([reward], rollout)
    expected = reward_context(rollout)
    assert {k: seen[k] for k in expected} == expected
    assert seen["completions"] == rollout.texts
    assert seen["solutions"] == [REC.solution, REC.solution, QA.solution, QA.solution]
    assert scored.rewards.tolist() == [6.0, 6.0, 10.0, 10.0]


def test_a_jsonl_rows_extra_fields_reach_the_reward(tmp_path):
    row = {
        "id": 11,
        "image": "cat.png",
        "conversations": [
            {"from": "human", "value": "<image>How many cats?"},
            {"from": "gpt", "value": "2"},
        ],
        "difficulty": 3,
        "tags": ["pets", "indoor"],
    }
    sample = parse_row(row, "f.jsonl:1", Path(tmp_path), rules=RowRules(check_images="none"))
    ctx = reward_context(rollout_of([prepared(sample, None, None, "")], [2], group_size=1))
    assert ctx["difficulty"] == [3] and ctx["tags"] == [["pets", "indoor"]]
    assert ctx["image_paths"] == [[str(tmp_path / "cat.png")]]
    assert ctx["problem"] == ["How many cats?"] and ctx["task"] == ["count"]
    assert ctx["sample_id"] == ["11"]


def test_an_extra_field_named_like_a_standard_key_is_only_in_meta(caplog, monkeypatch):
    monkeypatch.setattr(scoring, "_namespaced_warned", set())
    clashing = {"problem": "from data", "task": "x", "solution": "s", "completions": 1, "n": 2}
    sample = Sample("s", (), "real question", "a", "qa", meta=clashing)
    one = rollout_of([prepared(sample, None, None, "")], [1, 1])
    with caplog.at_level(logging.WARNING, logger="vlm_r1.rl.scoring"):
        ctx = reward_context(one)
        reward_context(one)
    assert ctx["problem"] == ["real question"] * 2 and ctx["task"] == ["qa"] * 2
    assert "solution" not in ctx and "completions" not in ctx and ctx["n"] == [2, 2]
    assert ctx["meta"][0]["problem"] == "from data" and ctx["meta"][0]["solution"] == "s"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 4 and any("'problem'" in m and "meta" in m for m in warned)
    # the spec's own positional names cannot clash either: this reward runs
    spec = RewardSpec("r", lambda completions, solution, **kw: [1.0] * 2, 0, 1, False)
    assert call_reward(spec, one.texts, ["a", "a"], **ctx).scores == [1.0, 1.0]


def custom(fn):
    return RewardSpec(fn.__name__, fn, -math.inf, math.inf, builtin=False)


def test_rewards_get_only_the_context_their_signature_asks_for(rollout):
    ctx = reward_context(rollout)
    texts, solutions = rollout.texts, ["s"] * 4

    def plain(completions, solutions):
        return [1.0] * len(completions)

    def named(completions, solution, difficulty, image_paths):
        return [d + len(p) for d, p in zip(difficulty, image_paths, strict=True)]

    def keyword_only(completions, solutions, *, box_spaces):
        return [s.original_size[0] for s in box_spaces]

    def completions_only(completions, **kwargs):  # VLM-R1's format_reward signature
        return [float("problem" in kwargs and "solutions" not in kwargs)] * len(completions)

    assert call_reward(custom(plain), texts, solutions, **ctx).scores == [1.0] * 4
    assert call_reward(custom(named), texts, solutions, **ctx).scores == [4, 4, 7, 7]
    assert call_reward(custom(keyword_only), texts, solutions, **ctx).scores == [64, 64, 100, 100]
    assert call_reward(custom(completions_only), texts, solutions, **ctx).scores == [1.0] * 4


def test_a_reward_asking_for_a_missing_key_scores_zero_saying_which(rollout, caplog):
    def needs_depth(completions, solutions, depth_map):
        return [1.0] * len(completions)

    with caplog.at_level(logging.WARNING, logger="vlm_r1.rewards.registry"):
        out = call_reward(custom(needs_depth), rollout.texts, ["s"] * 4, **reward_context(rollout))
    assert out.scores == [0.0] * 4
    assert "'depth_map'" in out.details[0]["error"] and "image_paths" in out.details[0]["error"]
    assert "needs_depth" in caplog.text


def test_data_never_sets_a_reward_parameter(tmp_path):
    """A row field named like a reward's setting reaches neither a built-in's parameter nor a
    custom reward's config-bound or defaulted one (it stays in ``meta``)."""
    half = ["<answer>[0, 0, 10, 10]</answer>"]  # IoU 0.5 with [0, 0, 20, 10]
    gt = [[0, 0, 20, 10]]
    spec = resolve_reward("rec_acc", threshold=0.9)
    assert call_reward(spec, half, gt, threshold=[0.0], strict=[True]).scores == [0.0]
    assert call_reward(resolve_reward("rec_acc"), half, gt, threshold=[0.9]).scores == [1.0]
    module = tmp_path / "scaled.py"
    module.write_text(
        "def scaled(completions, solutions, scale=1.0, bonus=0.0, **kwargs):\n"
        "    assert 'scale' not in kwargs and 'bonus' not in kwargs\n"
        "    return [scale + bonus + len(kwargs)] * len(completions)\n"
    )
    spec = resolve_reward(f"{module}:scaled", scale=2.0)
    out = call_reward(spec, ["a"], [None], scale=[100.0], bonus=[50.0], other=[0])
    assert out.scores == [3.0]  # scale 2 (config) + bonus 0 (default) + 1 context key
