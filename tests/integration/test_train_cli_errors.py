"""Bad input to ``vlm-r1 train`` fails before training with one clear line (exit code 2)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SUPPORT = str(Path(__file__).resolve().parents[1] / "support")


@pytest.mark.parametrize(
    "override, message",
    [
        (["algo.loss_type=ppo"], "algo.loss_type='ppo' is not allowed"),
        (["rewards=[{name: iou_magic}]"], "unknown reward 'iou_magic'"),
        (["model.path=/nonexistent/model"], "no checkpoint at '/nonexistent/model'"),
        (["data.train=/nonexistent.jsonl"], "data file not found: /nonexistent.jsonl"),
    ],
)
def test_train_rejects_bad_input_with_one_line(make_config, override, message):
    result = subprocess.run(
        [sys.executable, "-m", "vlm_r1.cli", "train", "--config", str(make_config()), *override],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": SUPPORT},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "GRPO" not in result.stdout  # no training started


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("vllm") is not None, reason="vLLM is installed here"
)
def test_vllm_backend_without_vllm_is_one_line(make_config):
    result = subprocess.run(
        [sys.executable, "-m", "vlm_r1.cli", "train", "--config", str(make_config())]
        + ["rollout.backend=vllm"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": SUPPORT},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "rollout.backend=vllm needs vLLM" in result.stderr
    assert "pip install 'vlm-r1[vllm]'" in result.stderr
    assert "Traceback" not in result.stderr
