"""Exact resume after SIGKILL, and 2-process DDP on CPU (gloo) through torchrun."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SUPPORT = str(Path(__file__).resolve().parents[1] / "support")


def run_cli(args, env_extra=None, timeout=600):
    env = {
        **os.environ,
        "PYTHONPATH": SUPPORT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        **(env_extra or {}),
    }
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)


def final_weights(out):
    return load_file(Path(out) / "final" / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("mu, killed_at", [(1, 3), (2, 4)])
def test_killed_run_resumes_exactly(make_config, tmp_path, mu, killed_at):
    """Train 6 steps straight vs. train, SIGKILL right after a checkpoint, resume to 6.

    With mu = 2 a checkpoint requested at step 3 lands at the end of that rollout batch (step 4).
    """
    common = {
        "optim": {
            "prompts_per_step": 2,
            "micro_batch_size": 4,
            "learning_rate": 5e-3,
            "max_steps": 6,
        },
        "algo": {"beta": 0.04, "num_iterations": mu},
    }
    straight = make_config(
        "straight",
        checkpoint={"output_dir": str(tmp_path / "straight"), "save_steps": 3, "resume": "none"},
        **common,
    )
    killed = make_config(
        "killed",
        checkpoint={"output_dir": str(tmp_path / "killed"), "save_steps": 3, "resume": "auto"},
        **common,
    )
    cli = [sys.executable, "-m", "vlm_r1.cli", "train", "--config"]
    result = run_cli(cli + [str(straight)])
    assert result.returncode == 0, result.stderr[-3000:]
    instrumented = [sys.executable, "-m", "instrumented_cli", "--kill-after-checkpoint"]
    result = run_cli(instrumented + [str(killed_at), "train", "--config", str(killed)])
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert (tmp_path / f"killed/checkpoint-{killed_at:06d}").is_dir()
    assert (
        not (tmp_path / "killed/checkpoint-000006").exists()
        and not (tmp_path / "killed/final").exists()
    )
    # A half-written checkpoint (a crash mid-save) must be ignored by resume.
    shutil.copytree(
        tmp_path / f"killed/checkpoint-{killed_at:06d}",
        tmp_path / "killed/.staging-checkpoint-000005",
    )
    (tmp_path / "killed/.staging-checkpoint-000005/trainer_state.json").unlink()
    result = run_cli(cli + [str(killed)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr and f"step {killed_at}" in result.stderr
    lines = (tmp_path / "killed/metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == [1, 2, 3, 4, 5, 6]  # each step logged once across the kill
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, worst
    start = load_file(
        Path(json.loads((tmp_path / "straight/config.json").read_text())["model"]["path"])
        / "model.safetensors"
    )
    assert any(not torch.equal(start[k], a[k]) for k in a), "training must have changed the weights"


@pytest.mark.slow
def test_two_processes_with_torchrun(make_config, tmp_path):
    overrides = {
        "optim": {
            "prompts_per_step": 4,
            "micro_batch_size": 4,
            "learning_rate": 5e-3,
            "max_steps": 3,
        },
        "algo": {"beta": 0.04},
    }
    double = make_config(
        "ddp",
        checkpoint={"output_dir": str(tmp_path / "ddp"), "save_steps": 100, "resume": "none"},
        **overrides,
    )
    single = make_config(
        "single",
        checkpoint={"output_dir": str(tmp_path / "single"), "save_steps": 100, "resume": "none"},
        **overrides,
    )
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "instrumented_cli",
        "--digest-parameters",
        "train",
        "--config",
        str(double),
    ]
    result = run_cli(torchrun)
    assert result.returncode == 0, result.stderr[-4000:]
    result = run_cli([sys.executable, "-m", "vlm_r1.cli", "train", "--config", str(single)])
    assert result.returncode == 0, result.stderr[-4000:]
    ddp = tmp_path / "ddp"
    state = json.loads((ddp / "checkpoint-000003/trainer_state.json").read_text())
    assert state["world_size"] == 2
    digests = {(ddp / f"param_digest_rank{r}.txt").read_text() for r in range(2)}
    assert len(digests) == 1, "parameters differ between ranks"
    # Every group's G completions were generated and scored on one rank, in one step.
    for step in (1, 2, 3):
        owners = {}
        for rank in range(2):
            with open(ddp / f"rollouts/step_{step:06d}_rank{rank}.jsonl") as handle:
                rows = [json.loads(line) for line in handle]
            assert len(rows) == 2 * 4  # 2 prompts per rank x G = 4
            for row in rows:
                owners.setdefault(row["sample_id"], set()).add((rank, row["group"]))
        assert all(len(v) == 1 for v in owners.values())
    # Same global batch, same sampled completions: the 1-process run sees the same numbers.
    with open(ddp / "metrics.jsonl") as handle:
        two = [json.loads(line) for line in handle]
    with open(tmp_path / "single/metrics.jsonl") as handle:
        one = [json.loads(line) for line in handle]
    assert two[0]["reward"] == pytest.approx(one[0]["reward"], abs=1e-7)
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], abs=1e-6)
    assert two[0]["grad_norm"] == pytest.approx(one[0]["grad_norm"], rel=1e-4)
    assert two[1]["loss"] == pytest.approx(one[1]["loss"], rel=1e-3, abs=1e-6)
