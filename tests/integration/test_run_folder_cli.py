"""What `vlm-r1 train` does with a folder that holds a run: refuse, --overwrite, --resume with
changed settings, a damaged newest checkpoint, a killed run's extra log rows; and SIGTERM's
exit code. One run folder is shared by the steps of the first test, in order."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SUPPORT = str(Path(__file__).resolve().parents[1] / "support")


def train(config, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "vlm_r1.cli", "train", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([SUPPORT, os.environ.get("PYTHONPATH", "")]),
        },
    )


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_start_refuse_resume_fall_back_and_overwrite(make_config, tmp_path):
    run = tmp_path / "run"
    config = make_config(
        "run",
        optim={"prompts_per_step": 2, "micro_batch_size": 4, "learning_rate": 1e-3, "max_steps": 2},
        checkpoint={"output_dir": str(run), "save_steps": 1, "keep_last": 2},
    )
    result = train(config)
    assert result.returncode == 0, result.stderr[-3000:]
    saved_config = (run / "config.json").read_text()

    # A plain re-run must not silently continue (or redo) the run, nor rewrite its config.
    result = train(config)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "already holds a run; use --resume" in result.stderr
    assert "Traceback" not in result.stderr and "GRPO" not in result.stdout
    assert (run / "config.json").read_text() == saved_config

    # Resume with a changed learning rate: refused by name, before the model loads.
    result = train(config, "--resume", "optim.learning_rate=0.005")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "optim.learning_rate: 0.001 -> 0.005" in result.stderr
    assert (run / "config.json").read_text() == saved_config

    # A killed process had logged steps past its last checkpoint, the last line half-written.
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 3, "loss": 9.0}) + "\n" + '{"step": 4, "lo')
    result = train(config, "--resume", "optim.max_steps=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resume: optim.max_steps changed from 2 to 3" in result.stderr
    assert "resumed from" in result.stderr and "step 2" in result.stderr
    assert logged_steps(run) == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["optim"]["max_steps"] == 3

    # The newest checkpoint is damaged: --resume falls back to the previous one, saying why.
    weights = run / "checkpoint-000003/model/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = train(config, "--resume", "optim.max_steps=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(weights) in result.stderr and "falling back" in result.stderr
    assert "resumed from" in result.stderr and "checkpoint-000002 at step 2" in result.stderr
    assert logged_steps(run) == [1, 2, 3, 4]

    # --overwrite starts again from the initial weights.
    result = train(config, "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert logged_steps(run) == [1, 2]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [
        "checkpoint-000001",
        "checkpoint-000002",
    ]


@pytest.mark.slow
def test_sigterm_saves_and_exits_143(make_config, tmp_path):
    run = tmp_path / "term"
    config = make_config(
        "term",
        rewards=[{"name": "toy_rewards:sigterm_once", "weight": 1.0}],
        optim={"prompts_per_step": 2, "micro_batch_size": 4, "learning_rate": 1e-3, "max_steps": 5},
        checkpoint={"output_dir": str(run), "save_steps": 100},
    )
    result = train(config)
    assert result.returncode == 128 + signal.SIGTERM, (result.returncode, result.stderr[-3000:])
    assert "stopped by SIGTERM at step 1" in result.stderr
    assert (run / "checkpoint-000001/trainer_state.json").is_file()
    assert not (run / "final").exists()
