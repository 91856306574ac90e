"""Run-folder rules (new run, --overwrite, --resume), checkpoint integrity and safe loading,
and the history cut on resume: all without loading a model."""

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vlm_r1 import checkpoint as ckpt
from vlm_r1.config import CheckpointConfig, ConfigError
from vlm_r1.distributed.launch import EngineRecord
from vlm_r1.distributed.parallelism import Parallelism
from vlm_r1.run_folder import clear_run, config_changes, holds_run, plan_run
from vlm_r1.tracking import drop_history_after, read_jsonl

CONFIG = {"optim": {"learning_rate": 1e-3, "max_steps": 4}, "logging": {"log_steps": 1}}


def fake_checkpoint(folder: Path, step: int, config=CONFIG) -> Path:
    """A checkpoint with every file a real one has (tiny tensors), written as the engine does."""
    stage = ckpt.begin(folder, step)
    (stage / "model").mkdir()
    save_file({"w": torch.arange(64, dtype=torch.float32)}, stage / "model/model.safetensors")
    ckpt.write_rank_state(stage, 0)
    (stage / "config.json").write_text(json.dumps(config))
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    torch.save(optimizer.state_dict(), stage / "optimizer.pt")
    torch.save(scheduler.state_dict(), stage / "scheduler.pt")
    ckpt.write_state(stage, {"step": step})
    return ckpt.commit(folder, step, keep_last=0)


def settings(folder, **kw):
    return CheckpointConfig(output_dir=str(folder), **kw)


def test_a_new_run_refuses_a_folder_that_holds_one(tmp_path):
    assert plan_run(settings(tmp_path), CONFIG).checkpoint is None  # empty folder: fine
    (tmp_path / "config.json").write_text("{}")  # a start that failed before training
    assert not holds_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ConfigError, match="already holds a run; use --resume .* or --overwrite"):
        plan_run(settings(tmp_path), CONFIG)
    assert plan_run(settings(tmp_path, overwrite=True), CONFIG).checkpoint is None


def test_overwrite_deletes_only_what_a_run_writes(tmp_path):
    fake_checkpoint(tmp_path, 2)
    (tmp_path / ".staging-checkpoint-000003").mkdir()
    (tmp_path / "rollouts").mkdir()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]


def test_resume_refuses_changed_settings_but_allows_the_short_list(tmp_path):
    path = fake_checkpoint(tmp_path, 2)
    changed = {"optim": {"learning_rate": 5e-3, "max_steps": 4}, "logging": {"log_steps": 1}}
    with pytest.raises(ConfigError, match=r"optim.learning_rate: 0.001 -> 0.005") as info:
        plan_run(settings(tmp_path, resume="auto"), changed)
    assert "\n" not in str(info.value)
    longer = {
        "optim": {"learning_rate": 1e-3, "max_steps": 9},
        "logging": {"log_steps": 5},
        "eval": {"steps": 10},  # validation switched on at resume
    }
    plan = plan_run(settings(tmp_path, resume="auto"), longer)
    assert plan.checkpoint == path
    assert [(k, repr(old), new) for k, old, new in plan.changes] == [
        ("eval.steps", "<absent>", 10),
        ("logging.log_steps", "1", 5),
        ("optim.max_steps", "4", 9),
    ]


def test_resume_on_another_engine_or_process_count_is_refused(tmp_path):
    zero3 = {"engine": "deepspeed", "world_size": 2, "zero_stage": 3, "fsdp_version": None}
    fake_checkpoint(tmp_path, 2, config={**CONFIG, "launch": zero3})
    fsdp2 = {"engine": "fsdp2", "world_size": 2, "zero_stage": None, "fsdp_version": 2}
    with pytest.raises(ConfigError, match=r"launch.engine: 'deepspeed' -> 'fsdp2'"):
        plan_run(settings(tmp_path, resume="auto"), {**CONFIG, "launch": fsdp2})
    with pytest.raises(ConfigError, match=r"launch.world_size: 2 -> 4"):
        plan_run(
            settings(tmp_path, resume="auto"), {**CONFIG, "launch": {**zero3, "world_size": 4}}
        )
    assert plan_run(settings(tmp_path, resume="auto"), {**CONFIG, "launch": zero3}).checkpoint


def test_a_checkpoint_from_before_engines_were_recorded_still_resumes(tmp_path):
    path = fake_checkpoint(tmp_path, 2)  # its config has no "launch"
    ddp = {"engine": "replicated", "world_size": 1, "zero_stage": None, "fsdp_version": None}
    assert plan_run(settings(tmp_path, resume="auto"), {**CONFIG, "launch": ddp}).checkpoint == path


def test_config_changes_sees_added_and_removed_keys():
    old = {"a": {"b": 1, "c": [1, 2]}}
    new = {"a": {"b": 1, "c": [1, 3], "d": True}}
    assert [(k, repr(o), repr(n)) for k, o, n in config_changes(old, new)] == [
        ("a.c", "[1, 2]", "[1, 3]"),
        ("a.d", "<absent>", "True"),
    ]


@pytest.mark.parametrize("damage", ["truncate_weights", "truncate_state", "truncate_optimizer"])
def test_damaged_newest_checkpoint_falls_back_with_a_warning_naming_the_file(
    tmp_path, caplog, damage
):
    older = fake_checkpoint(tmp_path, 1)
    newest = fake_checkpoint(tmp_path, 2)
    file = {
        "truncate_weights": newest / "model/model.safetensors",
        "truncate_state": newest / ckpt.STATE_FILE,
        "truncate_optimizer": newest / "optimizer.pt",
    }[damage]
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        plan = plan_run(settings(tmp_path, resume="auto"), CONFIG)
    assert plan.checkpoint == older
    assert str(file) in caplog.text and "falling back" in caplog.text
    # Chosen explicitly, a damaged checkpoint is an error naming the file, not a fallback.
    with pytest.raises(ckpt.CheckpointError, match=str(file)):
        plan_run(settings(tmp_path, resume=str(newest)), CONFIG)


def test_checkpoint_state_loads_with_weights_only(tmp_path):
    """Optimizer, scheduler and RNG states are tensors and plain values: ``weights_only``."""
    path = fake_checkpoint(tmp_path, 1)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state_rank0.pt"):
        torch.load(path / name, weights_only=True)
    draws = []
    for _ in range(2):  # restoring the saved state replays the same random numbers
        ckpt.set_rng_state(ckpt.load_tensors(path / "rng_state_rank0.pt"))
        draws.append((torch.rand(2).tolist(), random.random(), float(np.random.rand())))
    assert draws[0] == draws[1]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_a_pickle_payload_in_a_checkpoint_does_not_run(tmp_path):
    path = fake_checkpoint(tmp_path, 1)
    marker = tmp_path / "marker"
    torch.save({"state": {}, "param_groups": [], "x": _Payload(str(marker))}, path / "optimizer.pt")
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    with pytest.raises(ckpt.CheckpointError, match="optimizer.pt"):
        Parallelism(None, EngineRecord("replicated", 1)).load_optimizer(
            path, None, optimizer, scheduler
        )
    assert not marker.exists()


def test_history_is_cut_back_to_the_resumed_step(tmp_path, caplog):
    rows = [{"step": s, "loss": s / 10} for s in (1, 2, 3, 4, 5)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo'  # killed mid-write
    (tmp_path / "metrics.jsonl").write_text(text)
    (tmp_path / "rollouts").mkdir()
    for step in (2, 3, 4):
        (tmp_path / f"rollouts/step_{step:06d}_rank0.jsonl").write_text("{}\n")
    with caplog.at_level(logging.WARNING):
        drop_history_after(tmp_path, 3)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "rollouts").iterdir()) == [
        "step_000002_rank0.jsonl",
        "step_000003_rank0.jsonl",
    ]
    assert f"{tmp_path / 'metrics.jsonl'}:6: skipping" in caplog.text


def test_report_reads_a_history_with_a_half_written_last_line(tmp_path, caplog):
    from vlm_r1.report.plots import read_history

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n{"step": 2, "rew')
    with caplog.at_level(logging.WARNING):
        assert read_history(tmp_path) == [{"step": 1, "reward": 0.5}]
    assert "metrics.jsonl:2" in caplog.text


def test_a_run_saved_before_a_setting_existed_resumes_when_it_is_at_its_default(tmp_path):
    """Upgrading vlm-r1 mid-run: a key the saved config lacks ran as its default did (new
    settings default to the old behaviour), so only a non-default value of it is a change."""
    path = fake_checkpoint(tmp_path, 2)  # saved before "prompt" and "optim.new_knob" existed
    defaults = {"prompt": {"system": ""}, "optim": {"new_knob": 0}}
    config = {**CONFIG, "prompt": {"system": ""}, "optim": {**CONFIG["optim"], "new_knob": 0}}
    plan = plan_run(settings(tmp_path, resume="auto"), config, defaults)
    assert plan.checkpoint == path and plan.changes == []
    with pytest.raises(ConfigError, match=r"prompt.system: <absent> -> 'Answer briefly.'"):
        plan_run(
            settings(tmp_path, resume="auto"),
            {**config, "prompt": {"system": "Answer briefly."}},
            defaults,
        )
    with pytest.raises(ConfigError, match=r"prompt.system"):  # no defaults known: refused
        plan_run(settings(tmp_path, resume="auto"), config)
