"""The demo's base: its recipe, the shipped copy (found only for its own recipe, its weights
checked), and the copy in the package matching the default plan."""

import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from vlm_r1.checkpoint import list_checkpoints
from vlm_r1.demo import PLANS
from vlm_r1.demo.base import (
    MANIFEST,
    SHIPPED,
    WEIGHTS,
    pretrain_tasks,
    recipe,
    sha256,
    ship,
    shipped_base,
    write_pretraining_data,
)
from vlm_r1.demo.plan import FAMILY
from vlm_r1.demo.tower import TOWER_SCENES
from vlm_r1.models.tiny import tiny_checkpoint
from vlm_r1.tracking import read_jsonl

PRETRAINING_FIELDS = {
    "model_size": "test",
    "image_size": "224",
    "object_scale": 1.0,
    "n_pretrain": 7,
    "pretrain_tower_steps": 3,
    "pretrain_stages": (("locate", 5, 5e-4),),
    "pretrain_batch": 2,
    "base_seed": 9,
}


def test_the_recipe_is_json_and_changes_with_every_pretraining_field():
    plan = PLANS["default"]
    assert json.loads(json.dumps(recipe(plan))) == recipe(plan)
    for name, value in PRETRAINING_FIELDS.items():
        assert recipe(replace(plan, **{name: value})) != recipe(plan), name
    # post-training fields do not touch the base
    assert recipe(replace(plan, n_train=5, grpo_lr=1.0, seeds=3)) == recipe(plan)


def test_the_recipe_changes_with_a_stage_learning_rate():
    plan = replace(PLANS["default"], pretrain_stages=(("locate", 5, 5e-4), ("named", 5, 1e-3)))
    faster = replace(plan, pretrain_stages=(("locate", 5, 5e-4), ("named", 5, 2e-3)))
    assert recipe(faster) != recipe(plan)


def test_pretrain_tasks_are_the_stages_tasks_in_order_of_first_use():
    stages = (("locate+named", 1, 1e-3), ("rec_mix+locate", 1, 1e-3))
    plan = replace(PLANS["default"], pretrain_tower_steps=0, pretrain_stages=stages)
    assert pretrain_tasks(plan) == ("locate", "named", "rec_mix")
    # a derived task needs its source; a tower stage needs its scenes, first
    derived = replace(plan, pretrain_stages=(("negation+locate", 1, 1e-3),))
    assert pretrain_tasks(derived) == ("rec_mix", "locate")
    assert pretrain_tasks(replace(derived, pretrain_tower_steps=2)) == TOWER_SCENES


def test_derived_tasks_are_written_beside_their_sources_split_by_split(tmp_path):
    plan = replace(PLANS["quick"], n_pretrain=60, n_eval=8)
    write_pretraining_data(plan, tmp_path, ("rec_mix",))
    rows = read_jsonl(tmp_path / "rec_mix_train.jsonl")
    derived = read_jsonl(tmp_path / "negation_train.jsonl")
    assert derived == [row for row in rows if row["kind"] == "negation"]
    assert 0 < len(derived) < len(rows)
    assert (tmp_path / "negation_eval_in.jsonl").is_file()
    assert not (tmp_path / "match1_train.jsonl").exists()  # its source, locate, was not asked for
    write_pretraining_data(plan, tmp_path, ("locate",))
    assert len(read_jsonl(tmp_path / "match1_train.jsonl")) == 60
    assert len(read_jsonl(tmp_path / "match1_eval_in.jsonl")) == 8


@pytest.fixture
def shipped(tmp_path):
    plan = replace(PLANS["quick"], model_size="test")
    checkpoint = tiny_checkpoint("qwen3_vl", "test", 0)
    folder = ship(checkpoint, plan, {"all": 0.5}, tmp_path / "shipped_base")
    return plan, checkpoint, folder


def test_ship_stores_bfloat16_weights_and_a_manifest_the_plan_finds(shipped):
    plan, checkpoint, folder = shipped
    assert shipped_base(plan, folder) == folder
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["recipe"] == recipe(plan) and manifest["scores"] == {"all": 0.5}
    assert manifest["sha256"] == sha256(folder / WEIGHTS)
    assert (folder / WEIGHTS).stat().st_mode & 0o777 == 0o644
    original, stored = load_file(checkpoint / WEIGHTS), load_file(folder / WEIGHTS)
    assert original.keys() == stored.keys()
    for name, tensor in original.items():
        assert stored[name].dtype == torch.bfloat16
        assert torch.equal(stored[name], tensor.to(torch.bfloat16)), name
    assert (folder / "tokenizer.json").read_bytes() == (checkpoint / "tokenizer.json").read_bytes()
    assert not list(folder.parent.glob("*.tmp"))


def test_another_recipe_does_not_take_the_shipped_base(shipped):
    plan, _, folder = shipped
    assert shipped_base(replace(plan, pretrain_tower_steps=123), folder) is None
    assert shipped_base(plan, folder / "missing") is None


def test_damaged_shipped_weights_are_an_error_not_a_silent_rebuild(shipped):
    plan, _, folder = shipped
    weights = folder / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(RuntimeError, match="SHA-256"):
        shipped_base(plan, folder)


def test_the_shipped_base_is_the_default_plans_and_loads_in_float32():
    """Changing the default plan's pretraining without shipping a base built from it fails
    here (``scripts/ship_demo_base.py`` rebuilds it)."""
    from transformers import AutoModelForImageTextToText

    assert shipped_base(PLANS["default"]) == SHIPPED
    model = AutoModelForImageTextToText.from_pretrained(SHIPPED, dtype=torch.float32)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    scores = json.loads((SHIPPED / MANIFEST).read_text())["scores"]
    assert scores["competence"]["rec_mix"]["by_kind"]["all"]["n"] == 200


def test_the_detection_budget_holds_the_detection_answers_the_detector_learns(tmp_path):
    """GRPO and eval cut a completion at ``ovd_max_completion_length`` tokens: a budget shorter
    than the detection answers (3-5 labelled boxes, with the think) turns the answers the
    detector learned into format failures, and box flooding could not even be written."""
    from transformers import AutoProcessor

    from vlm_r1.data.jsonl import read_samples
    from vlm_r1.data.shapes import write_shapes
    from vlm_r1.models import get_adapter
    from vlm_r1.policy.prompts import prepare_prompt
    from vlm_r1.sft import target_text

    plan = PLANS["full"]
    files = write_shapes(
        tmp_path, 300, 0, plan.base_seed, plan.image_size, ("ovd",), plan.object_scale
    )
    adapter = get_adapter(FAMILY)
    processor = AutoProcessor.from_pretrained(SHIPPED)
    lengths = sorted(
        len(processor.tokenizer(text + adapter.eos_token, add_special_tokens=False)["input_ids"])
        for text in (
            target_text(prepare_prompt(adapter, processor, sample), adapter, processor, True)
            for sample in read_samples(str(files["ovd_train"]))
        )
    )
    assert lengths[-1] <= plan.ovd_max_completion_length, lengths[-10:]


def test_a_killed_build_resumes_to_the_uninterrupted_builds_weights(tmp_path, monkeypatch):
    """``build_base(resume=True)`` keeps the finished tower and stages and goes on from the
    newest checkpoint of the stage that was cut short: the same weights, bit for bit."""
    from vlm_r1.config import ConfigError
    from vlm_r1.demo import base, stages
    from vlm_r1.demo.base import build_base

    monkeypatch.setattr(stages, "RESUMABLE_SAVE_STEPS", 2)
    plan = replace(
        PLANS["quick"],
        model_size="test",
        n_pretrain=12,
        n_eval=2,
        pretrain_tower_steps=2,
        pretrain_stages=(("locate", 2, 5e-4), ("named", 5, 1e-3)),
        pretrain_batch=2,
    )
    data = tmp_path / "data"
    whole = load_file(build_base(plan, data, tmp_path / "whole") / WEIGHTS)

    runs = tmp_path / "runs"
    build_base(plan, data, runs, resume=True)
    # As if killed in stage 1 after its step-4 checkpoint: the step-5 one and final/ never made.
    before = read_jsonl(runs / "stage1" / "metrics.jsonl")
    saved = dict(list_checkpoints(runs / "stage1"))
    assert sorted(saved) == [4, 5]
    shutil.rmtree(runs / "stage1" / "final")
    shutil.rmtree(saved[5])

    def no_second_tower(*args, **kwargs):
        raise AssertionError("the finished tower was trained again")

    monkeypatch.setattr(base, "train_tower", no_second_tower)
    resumed = load_file(build_base(plan, data, runs, resume=True) / WEIGHTS)
    assert resumed.keys() == whole.keys()
    for name, tensor in whole.items():
        assert torch.equal(resumed[name], tensor), name
    # Steps 1-4 were not trained again: their logged rows (timings included) are the first run's.
    after = read_jsonl(runs / "stage1" / "metrics.jsonl")
    assert [row["step"] for row in after] == [1, 2, 3, 4, 5]
    assert after[:4] == before[:4] and after[4]["step_seconds"] != before[4]["step_seconds"]

    # Resuming into a build of another recipe is refused, not mixed into it.
    other = replace(plan, pretrain_stages=(("locate", 2, 5e-4), ("named", 5, 2e-3)))
    with pytest.raises(ConfigError, match="learning_rate"):
        build_base(other, data, runs, resume=True)
