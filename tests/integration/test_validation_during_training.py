"""Validation during training (``eval.steps``), end to end on a tiny Qwen2.5-VL on CPU.

* What a GRPO or SFT run logs as ``eval/*`` at steps 2 and 4 (``eval.steps=2``) is what
  ``vlm-r1 eval`` (``evaluate_checkpoint``, a separate path: a fresh load of the saved
  checkpoint) reports for that step's checkpoint, with the run's prompt settings, on the same
  held-out draw.
* Training is unchanged by it: the same run with validation off logs the same losses, rewards
  and gradient norms at every step and ends with bit-identical weights. The model has attention
  dropout here, so a validation that left the model in eval mode or moved the random-number
  streams would change every later step.
* The GRPO run ends after step 3 (validated: the end of training) and is resumed to step 4:
  the schedule carries on.
* Two processes (torchrun, gloo) log the numbers one process computes for the same weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vlm_r1.config import load_config
from vlm_r1.data.shapes import write_shapes
from vlm_r1.eval.runner import evaluate_checkpoint
from vlm_r1.rl.trainer import run_training
from vlm_r1.sft import SFTConfig, run_sft

SUPPORT = str(Path(__file__).resolve().parents[1] / "support")
#: Wall-clock measurements: the only values allowed to differ between identical runs.
TIMING = ("step_seconds", "tokens_per_second")
HELD_OUT = {"limit": 7, "batch_size": 2, "max_new_tokens": 12}
#: A system turn of our own: validation must ask the way the run trains.
PROMPT = {"system": "Answer with boxes.", "templates": {}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Training rows, and a held-out file of three tasks (4 REC, 2 counting and 3 QA rows, of
    which ``limit`` draws 7; batches of 2, so processes share them unevenly). The QA rows are
    scored by ``fuzzy_text`` (string similarity), which gives even a tiny random model's
    answers a score that moves with its weights: the comparisons below are not all zeros."""
    out = tmp_path_factory.mktemp("validation_data")
    paths = write_shapes(
        out, n_train=16, n_eval=6, seed=1, image_size="112", tasks=["rec", "count"]
    )
    rows = paths["rec_eval_in"].read_text().splitlines()[:4]
    count = [json.loads(line) for line in paths["count_eval_in"].read_text().splitlines()]
    rows += [json.dumps(row) for row in count[:2]]
    for row in count[2:5]:
        row.update(id=row["id"].replace("count", "qa"), task="qa", accu_reward_method="fuzzy_text")
        row["conversations"] = [
            {"from": "human", "value": "<image>Which shapes are in the image?"},
            {"from": "gpt", "value": ", ".join(f"a {o[2]} {o[1]} {o[0]}" for o in row["objects"])},
        ]
        rows.append(json.dumps(row))
    held_out = out / "held_out.jsonl"
    held_out.write_text("".join(row + "\n" for row in rows))
    return {"train": paths["rec_train"], "held_out": held_out}


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory, tiny_path):
    """The tiny checkpoint with attention dropout 0.1: training draws random numbers every
    forward, and evaluation in train mode would not be greedy decoding of the weights."""
    folder = tmp_path_factory.mktemp("dropout_model") / "model"
    shutil.copytree(tiny_path("qwen2_5_vl"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["attention_dropout"] = 0.1
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def recipe(folder: Path, name: str, model: Path, data: dict, sft: bool, **sections) -> Path:
    """A 4-step run (checkpoints every 2 steps, all kept); ``sections`` update its values."""
    config = {
        "model": {"path": str(model)},
        "data": {"train": str(data["train"])},
        "prompt": PROMPT,
        "optim": {
            "prompts_per_step": 2,
            "micro_batch_size": 4,
            "learning_rate": 3e-3 if sft else 1e-3,
            "max_steps": 4,
        },
        "checkpoint": {
            "output_dir": str(folder / name),
            "save_steps": 2,
            "keep_last": 0,
            "resume": "auto",
        },
        "logging": {"report_to": "none", "progress": False, "rollout_log_steps": 0},
        "seed": 0,
    }
    if not sft:
        config.update(
            rewards=[
                {"name": "toy_rewards:digit_fraction", "weight": 1.0},
                {"name": "format", "weight": 0.5},
            ],
            rollout={"num_generations": 4, "max_completion_length": 12},
            algo={"beta": 0.0},
        )
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def validation(data: dict, steps: int = 2) -> dict:
    return {"steps": steps, "data": str(data["held_out"]), **HELD_OUT}


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def training_part(rows: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in row.items() if not k.startswith("eval/") and k not in TIMING}
        for row in rows
    ]


def vlm_r1_eval(out: Path, step: int) -> dict:
    """``vlm-r1 eval`` of the run's checkpoint at ``step`` with the run's prompt settings, as
    the ``eval/*`` values a run logs."""
    metrics = evaluate_checkpoint(
        str(out / f"checkpoint-{step:06d}" / "model"),
        str(json.loads((out / "config.json").read_text())["eval"]["data"]),
        batch_size=HELD_OUT["batch_size"],
        max_new_tokens=HELD_OUT["max_new_tokens"],
        limit=HELD_OUT["limit"],
        progress=False,
        device="cpu",
        prompt_config=out / "config.json",  # the run's `prompt` section
    )
    assert metrics["_meta"]["prompt"] == str(out / "config.json")
    return {
        f"eval/{task}/{name}": value
        for task, values in metrics.items()
        if task != "_meta"
        for name, value in values.items()
        if name != "n"
    }


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "model.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data, dropout_model):
    """Each recipe with validation on and off (GRPO's on-run ends at 3, resumed to 4)."""
    folder = tmp_path_factory.mktemp("validation_runs")
    done = {}
    on = recipe(folder, "grpo_on", dropout_model, data, False, eval=validation(data))
    run_training(load_config(on, ["optim.max_steps=3"]))  # ends after step 3 ...
    run_training(load_config(on))  # ... and is resumed to step 4
    run_training(load_config(recipe(folder, "grpo_off", dropout_model, data, False)))
    on = recipe(folder, "sft_on", dropout_model, data, True, eval=validation(data))
    run_sft(load_config(on, cls=SFTConfig))
    run_sft(load_config(recipe(folder, "sft_off", dropout_model, data, True), cls=SFTConfig))
    for name in ("grpo_on", "grpo_off", "sft_on", "sft_off"):
        done[name] = folder / name
    return done


@pytest.mark.slow
@pytest.mark.parametrize("recipe_name", ["grpo", "sft"])
def test_logged_validation_is_vlm_r1_eval_of_the_checkpoint(runs, recipe_name):
    out = runs[f"{recipe_name}_on"]
    rows = {row["step"]: row for row in history(out)}
    assert sorted(rows) == [1, 2, 3, 4]
    evaluated = sorted(s for s, row in rows.items() if any(k.startswith("eval/") for k in row))
    # Every 2 steps and at the end of training: GRPO's first run ended at step 3.
    assert evaluated == ([2, 3, 4] if recipe_name == "grpo" else [2, 4])
    seen = {}
    for step in evaluated:
        expected = vlm_r1_eval(out, step)
        assert {"eval/rec/acc@0.5", "eval/rec/miou", "eval/count/accuracy"} <= set(expected)
        assert expected["eval/qa/accuracy"] > 0
        logged = {k: v for k, v in rows[step].items() if k.startswith("eval/")}
        assert logged == expected, step
        seen[step] = expected
    # Not vacuous: the scores move between the two checkpoints, so validating stale or
    # initial weights could not match both.
    assert seen[2]["eval/qa/accuracy"] != seen[4]["eval/qa/accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe_name", ["grpo", "sft"])
def test_validation_leaves_training_unchanged(runs, recipe_name):
    on, off = runs[f"{recipe_name}_on"], runs[f"{recipe_name}_off"]
    with_eval, without = history(on), history(off)
    assert not any(k.startswith("eval/") for row in without for k in row)
    assert training_part(with_eval) == training_part(without)  # every loss, bit for bit
    a, b = final_weights(on), final_weights(off)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(
        Path(json.loads((on / "config.json").read_text())["model"]["path"]) / "model.safetensors"
    )
    assert any(not torch.equal(start[k], a[k]) for k in start), "training changed nothing"


@pytest.mark.slow
def test_two_processes_log_what_one_process_computes(tmp_path, data, tiny_path):
    config = recipe(
        tmp_path,
        "ddp",
        tiny_path("qwen2_5_vl"),
        data,
        False,
        optim={"max_steps": 2},
        eval=validation(data),
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "vlm_r1.cli", "train", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SUPPORT}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "ddp"
    state = json.loads((out / "checkpoint-000002" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    row = history(out)[-1]
    assert row["step"] == 2
    expected = vlm_r1_eval(out, 2)  # one process, a fresh load of the same weights
    assert {k: v for k, v in row.items() if k.startswith("eval/")} == expected
