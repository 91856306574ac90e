"""Small synthetic run folders (metrics.jsonl, config.json, rollouts with a real PNG), written in
``tmp_path``, so report tests run in a second without training anything."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SFT_CONFIG = {"model": {}, "data": {}, "optim": {}, "think": True, "seed": 0}
GRPO_CONFIG = {"model": {}, "data": {}, "rewards": [], "rollout": {}, "algo": {}, "seed": 0}


def grpo_rows(steps: int = 20, seed: int = 0) -> list[dict[str, float]]:
    """A GRPO history shaped like a real one: noisy rising reward, a loss near 0, and the
    issue's centre-spread row: undefined (NaN) at step 7 where the old code logged ~30,000."""
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(1, steps + 1):
        reward = 0.3 + 0.02 * step + float(rng.normal(0, 0.05))
        rows.append(
            {
                "step": step,
                "reward": reward,
                "reward/accuracy": reward / 2,
                "reward/format": min(1.0, 0.5 + 0.03 * step),
                "loss": float(rng.normal(0, 1e-3)),
                "kl": 0.001 * step,
                "entropy": 1.5 - 0.02 * step,
                "completion_length": 30 + float(rng.normal(0, 2)),
                "monitor/centre_spread_ratio": math.nan if step == 7 else 0.9,
                "monitor/why0/no_answer": 0.2,
                "monitor/why0/iou_zero": 0.3,
                "grad_norm": 0.5,
                "learning_rate": 1e-4,
                "optimizer_steps": float(step),
            }
        )
    return rows


def sft_rows(steps: int = 20) -> list[dict[str, float]]:
    return [
        {
            "step": step,
            "loss": 0.8 - 0.01 * step,
            "token_accuracy": 0.6 + 0.01 * step,
            "grad_norm": 1.0,
            "learning_rate": 1e-4,
        }
        for step in range(1, steps + 1)
    ]


def write_image(path: Path, size: tuple[int, int] = (112, 112), seed: int = 0) -> np.ndarray:
    """A random RGB image (every pixel different from its neighbours, so any blur shows)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def rollout_row(image: Path, step: int = 5) -> dict:
    return {
        "step": step,
        "rank": 0,
        "group": 0,
        "question": "the red square",
        "images": [str(image)],
        "task": "rec",
        "solution": "[10.0, 20.0, 40.0, 50.0]",
        "completion": "<think>there</think><answer>[100, 200, 500, 600]</answer>",
        "reward": 0.5,
        "rewards": {"accuracy": 0.0, "format": 1.0},
        "box_space": {"system": "norm1000", "original_size": [112, 112], "model_size": None},
    }


@pytest.fixture
def make_run(tmp_path):
    """``make_run(name, config, rows, rollouts=0) -> Path``: a run folder in ``tmp_path``."""

    def make(name: str, config: dict | None, rows: list[dict], rollouts: int = 0) -> Path:
        run = tmp_path / name
        run.mkdir()
        if config is not None:
            (run / "config.json").write_text(json.dumps(config))
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if rollouts:
            image = tmp_path / "images" / f"{name}.png"
            write_image(image)
            folder = run / "rollouts"
            folder.mkdir()
            lines = [json.dumps(rollout_row(image)) + "\n" for _ in range(rollouts)]
            (folder / "step_000005_rank0.jsonl").write_text("".join(lines))
        return run

    return make


@pytest.fixture
def synthetic():
    """The helpers above, for tests (a conftest is not imported by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        grpo_rows=grpo_rows,
        sft_rows=sft_rows,
        write_image=write_image,
        rollout_row=rollout_row,
        SFT_CONFIG=SFT_CONFIG,
        GRPO_CONFIG=GRPO_CONFIG,
    )
