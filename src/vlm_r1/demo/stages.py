"""The demo's building blocks: SFT and GRPO runs from dataclass configs, the cached pretraining,
and greedy evaluation. Each is one call into the recipes (``sft``, ``rl``, ``eval``)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlm_r1.config import (
    AlgoConfig,
    CheckpointConfig,
    DataConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    RewardTerm,
    RolloutConfig,
    TrainConfig,
)
from vlm_r1.demo.competence import accuracy_by_kind, where_boxes_land
from vlm_r1.demo.plan import DemoPlan
from vlm_r1.eval.runner import evaluate_checkpoint
from vlm_r1.models.tiny import cache_root
from vlm_r1.models.tiny.build import source_digest
from vlm_r1.rl.trainer import run_training
from vlm_r1.sft import SFTConfig, run_sft
from vlm_r1.tracking import read_jsonl

#: How often a resumable SFT stage saves: a checkpoint costs about a second, 250 steps minutes.
RESUMABLE_SAVE_STEPS = 250


def _quiet(output: Path) -> dict[str, Any]:
    return {
        "checkpoint": CheckpointConfig(
            output_dir=str(output), save_steps=10**9, resume="none", overwrite=True, keep_last=1
        ),
        "logging": LoggingConfig(report_to="none", rollout_log_steps=0, progress=True),
    }


def sft(
    model: str,
    data: str,
    out: Path,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    schedule: str = "constant",
    freeze_vision: bool = False,
    resume: bool = False,
) -> Path:
    """SFT ``model`` on ``data`` (':'-joined files) for ``steps``; returns its ``final/``.

    ``resume``: save every ``RESUMABLE_SAVE_STEPS`` and continue the run already in ``out``
    from its newest checkpoint (a finished run only rewrites ``final/``), so a long build that
    was killed loses minutes, not hours; the trainer refuses a saved run with other settings."""
    quiet = _quiet(out)
    if resume:
        quiet["checkpoint"] = replace(
            quiet["checkpoint"],
            save_steps=RESUMABLE_SAVE_STEPS,
            resume="auto",
            overwrite=False,
            keep_last=2,
        )
    config = SFTConfig(
        model=ModelConfig(path=model, freeze_vision=freeze_vision),
        data=DataConfig(train=data),
        optim=OptimConfig(
            prompts_per_step=batch,
            micro_batch_size=batch,
            learning_rate=lr,
            max_steps=steps,
            warmup_steps=min(10, steps // 5),
            schedule=schedule,
        ),
        seed=seed,
        **quiet,
    ).validate()
    run_sft(config)
    return out / "final"


def grpo(
    model: str,
    data: str,
    out: Path,
    plan: DemoPlan,
    steps: int,
    seed: int,
    accuracy: str,
    max_completion_length: int | None = None,
) -> Path:
    """GRPO from ``model`` with ``accuracy`` (a reward method) plus the format reward, KL to
    the start model at ``plan.grpo_beta``; returns its ``final/``."""
    base = _quiet(out)
    config = TrainConfig(
        model=ModelConfig(path=model),
        data=DataConfig(train=data),
        rewards=[RewardTerm("accuracy", 1.0, {"method": accuracy}), RewardTerm("format", 0.5)],
        rollout=RolloutConfig(
            num_generations=plan.grpo_generations,
            temperature=plan.grpo_temperature,
            max_completion_length=max_completion_length or plan.max_completion_length,
        ),
        algo=AlgoConfig(loss_type="grpo", beta=plan.grpo_beta),
        optim=OptimConfig(
            prompts_per_step=plan.grpo_prompts_per_step,
            micro_batch_size=16,
            learning_rate=plan.grpo_lr,
            max_steps=steps,
        ),
        checkpoint=base["checkpoint"],
        logging=replace(base["logging"], rollout_log_steps=max(1, steps // 4)),
        seed=seed,
    ).validate()
    run_training(config)
    return out / "final"


def cached_run(
    name: str, key: Sequence[Any], build: Callable[[Path], Path], resumable: bool = False
) -> Path:
    """The ``final/`` checkpoint ``build(staging)`` returns, cached on this machine under
    ``name`` and a digest of the vlm_r1 source and ``key`` (everything else that determines
    it). ``build`` trains into ``staging``; only a finished build is renamed into place, so a
    killed one is never taken for a finished one. It is redone from scratch, unless
    ``resumable``: then ``build`` gets the killed build's ``staging`` to continue (the base's
    hours-long build, ``base.build_base(resume=True)``); the key names the same code and
    recipe, so what it continues is the same build."""
    text = json.dumps([source_digest(Path(__file__).parents[1]), *key])
    cached = cache_root() / "demo" / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    marker = cached / "final.txt"
    if marker.is_file():
        return cached / marker.read_text().strip()
    staging = cached.with_name(cached.name + ".tmp")
    if not resumable:
        shutil.rmtree(staging, ignore_errors=True)
    final = build(staging)
    (staging / "final.txt").write_text(str(final.relative_to(staging)))
    shutil.rmtree(cached, ignore_errors=True)
    staging.rename(cached)
    return cached / final.relative_to(staging)


def evaluate(
    model: Path,
    data: Path,
    out: Path,
    limit: int,
    max_new_tokens: int = 48,
) -> dict[str, Any]:
    """Greedy eval of ``model`` on one JSONL file (predictions in ``out``)."""
    metrics = evaluate_checkpoint(
        str(model),
        str(data),
        out,
        batch_size=20,
        max_new_tokens=max_new_tokens,
        limit=limit,
        progress=False,
    )
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def grounding(model: Path, rows: Path, out: Path, limit: int) -> dict[str, Any]:
    """Evaluate ``model`` on REC ``rows`` (predictions in ``out``) and break the result down:
    ``{"by_kind": accuracy_by_kind, "boxes_land_on": where_boxes_land}`` (``competence.py``)."""
    evaluate(model, rows, out, limit)
    predictions = out / "predictions.jsonl"
    return {
        "by_kind": accuracy_by_kind(predictions, rows),
        "boxes_land_on": where_boxes_land(predictions, rows),
    }


def final_monitors(run: Path, keys: Sequence[str], last: int = 5) -> dict[str, float]:
    """The mean of each ``monitor/<key>`` over a run's last ``last`` logged steps (NaN-free)."""
    rows = read_jsonl(run / "metrics.jsonl")
    out = {}
    for key in keys:
        logged = [r.get(f"monitor/{key}") for r in rows[-last:]]
        values = [float(v) for v in logged if isinstance(v, (int, float)) and not math.isnan(v)]
        out[key] = sum(values) / len(values) if values else float("nan")
    return out
