"""Validation during training (the ``eval`` section), the parts that need no training run:
config rules that name the key, the held-out data read and checked before the model loads,
the schedule, the metric names, and the guard that leaves training state untouched.
(tests/integration/test_validation_during_training.py runs it inside GRPO and SFT.)"""

import random
import typing

import numpy as np
import pytest
import torch

from vlm_r1.config import ConfigError, TrainConfig, load_config
from vlm_r1.config.sections import EvalConfig
from vlm_r1.data.shapes import write_shapes
from vlm_r1.eval.during_training import (
    Validation,
    is_validation_step,
    load_validation_samples,
    logged_metrics,
    untouched_training_state,
)
from vlm_r1.eval.metrics import CONVENTIONS
from vlm_r1.eval.runner import load_eval_samples
from vlm_r1.sft import SFTConfig


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("validation_shapes")
    return write_shapes(out, n_train=2, n_eval=7, seed=3, image_size="64", tasks=["rec"])


@pytest.mark.parametrize("cls", [TrainConfig, SFTConfig])
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["eval.steps=-1"], "eval.steps=-1 must be >= 0"),
        (["eval.steps=2", "eval.data=v.jsonl", "eval.limit=0"], "eval.limit=0 must be >= 1"),
        (["eval.batch_size=0"], "eval.batch_size=0 must be >= 1"),
        (["eval.max_new_tokens=0"], "eval.max_new_tokens=0 must be >= 1"),
        (["eval.metric_convention=coco"], "eval.metric_convention='coco' is not allowed"),
        (["eval.steps=5"], "eval.steps=5 needs eval.data"),
        (["eval.data=v.jsonl", "eval.split=test"], "eval.split applies only to a datasets"),
        (["eval.data=v.jsonl", "eval.columns={image: img}"], "eval.columns applies only"),
        (["eval.stpes=5"], "unknown config key 'eval.stpes' (did you mean 'steps'?)"),
    ],
)
def test_bad_eval_settings_fail_at_load_naming_the_key(cls, overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.train=x.jsonl", *overrides], cls=cls)
    assert message in str(info.value)


@pytest.mark.parametrize("cls", [TrainConfig, SFTConfig])
def test_validation_is_off_by_default_and_reads_well_in_yaml(cls, tmp_path):
    assert load_config(None, ["data.train=x.jsonl"], cls=cls).eval.steps == 0
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data: {train: x.jsonl}\n"
        "eval: {data: val.jsonl, steps: 50, limit: 200, batch_size: 4, max_new_tokens: 64}\n"
    )
    settings = load_config(recipe, cls=cls).eval
    assert (settings.data, settings.steps, settings.limit) == ("val.jsonl", 50, 200)
    assert (settings.batch_size, settings.max_new_tokens) == (4, 64)
    # A datasets source takes a split and columns, as data.train does.
    load_config(None, ["data.train=x", "eval.data=hf:org/name", "eval.split=validation"], cls=cls)


def test_metric_conventions_are_the_evaluators():
    hints = typing.get_type_hints(EvalConfig)
    assert typing.get_args(hints["metric_convention"]) == CONVENTIONS


def test_held_out_data_is_read_by_eval_and_drawn_as_eval_draws_it(shapes):
    data = str(shapes["rec_eval_in"])
    settings = EvalConfig(steps=2, data=data, limit=4)
    first = load_validation_samples(settings)
    assert [s.id for s in first] == [s.id for s in load_validation_samples(settings)]
    # The same draw as `vlm-r1 eval --limit 4`, so its numbers are comparable.
    assert [s.id for s in first] == [s.id for s in load_eval_samples(data, limit=4)]
    assert len({s.id for s in first}) == 4
    everything = load_validation_samples(EvalConfig(steps=2, data=data))
    assert len(everything) == 7


def test_missing_or_bad_held_out_data_is_a_config_error_naming_eval_data(shapes, tmp_path):
    with pytest.raises(ConfigError, match=r"eval.data='/nonexistent/v.jsonl' cannot be used: "):
        load_validation_samples(EvalConfig(steps=2, data="/nonexistent/v.jsonl"))
    bad = tmp_path / "bad.jsonl"
    rows = shapes["rec_eval_in"].read_text().splitlines()
    bad.write_text(rows[0] + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"eval.data=.*bad.jsonl:2"):
        load_validation_samples(
            EvalConfig(steps=2, data=str(bad), image_folders=str(shapes["rec_eval_in"].parent))
        )


@pytest.mark.parametrize("recipe", ["grpo", "sft"])
def test_bad_held_out_data_stops_the_run_before_the_model_loads(
    recipe, shapes, tmp_path, monkeypatch
):
    def no_model(*args, **kwargs):
        raise AssertionError("the Engine (model loading) was reached")

    overrides = [
        f"data.train={shapes['rec_train']}",
        "eval.steps=2",
        f"eval.data={tmp_path / 'missing.jsonl'}",
        f"checkpoint.output_dir={tmp_path / 'run'}",
    ]
    if recipe == "grpo":
        from vlm_r1.rl import trainer

        monkeypatch.setattr(trainer, "Engine", no_model)
        run = trainer.GRPOTrainer(load_config(None, overrides))
    else:
        from vlm_r1 import sft

        monkeypatch.setattr(sft, "Engine", no_model)
        run = sft.SFTTrainer(load_config(None, overrides, cls=SFTConfig))
    with pytest.raises(ConfigError, match="eval.data=.*missing.jsonl"):
        run.setup()


def test_validation_is_none_when_off(shapes):
    # Off: nothing is read (the file may not even exist).
    assert Validation.start(EvalConfig(steps=0, data="/nonexistent.jsonl"), None) is None


def test_schedule_every_n_steps_and_at_the_end():
    due = [s for s in range(1, 8) if is_validation_step(s, 3, 7)]
    assert due == [3, 6, 7]
    assert [s for s in range(1, 7) if is_validation_step(s, 2, 6)] == [2, 4, 6]
    assert not any(is_validation_step(s, 0, 5) for s in range(1, 6))
    # The step alone decides: a run resumed at step 4 validates at 6 and 7 as before.
    assert [s for s in range(5, 8) if is_validation_step(s, 3, 7)] == [6, 7]


def test_metric_names_are_eval_task_metric_without_counts():
    scored = {
        "rec": {"acc@0.5": 0.5, "miou": 0.25, "n": 4, "format_failure_rate": 0.0},
        "ovd": {"mAP": 0.1, "AP50": 0.2, "AR100": 0.3, "n": 3},
        "_meta": {"samples": 7},
    }
    assert logged_metrics(scored) == {
        "eval/ovd/AP50": 0.2,
        "eval/ovd/AR100": 0.3,
        "eval/ovd/mAP": 0.1,
        "eval/rec/acc@0.5": 0.5,
        "eval/rec/format_failure_rate": 0.0,
        "eval/rec/miou": 0.25,
    }


def test_training_state_is_untouched_by_what_happens_inside():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5), torch.nn.Dropout())
    model.train()
    model[2].eval()  # a submodule kept in eval mode on purpose must stay so
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with untouched_training_state(model):
        assert not any(m.training for m in model.modules())  # dropout off while evaluating
        random.random(), np.random.rand(), torch.rand(5)  # something draws numbers
    assert [m.training for m in model.modules()] == [True, True, True, False]
    after = (random.random(), float(np.random.rand()), torch.rand(3))
    assert after[:2] == expected[:2] and torch.equal(after[2], expected[2])
    # Also when evaluation fails half-way.
    with pytest.raises(RuntimeError), untouched_training_state(model):
        raise RuntimeError("generation failed")
    assert [m.training for m in model.modules()] == [True, True, True, False]
