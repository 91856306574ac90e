"""Sampled rollouts as JSONL (``rollouts/step_XXXXXX_rankR.jsonl``): what the report draws and
what a person reads to see what the policy writes and how each reward scored it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlm_r1.rl.scoring import ScoredRollout


def write_rollouts(
    folder: Path, step: int, rank: int, scored: ScoredRollout, advantages: torch.Tensor
) -> Path:
    """One line per completion: prompt, completion, rewards (total and per term), advantage."""
    folder.mkdir(exist_ok=True)
    rollout = scored.rollout
    path = folder / f"step_{step:06d}_rank{rank}.jsonl"
    with open(path, "w") as handle:
        for i, text in enumerate(rollout.texts):
            prompt = rollout.prompt_of(i)
            row = {
                "step": step,
                "rank": rank,
                "group": i // rollout.group_size,
                "sample_id": prompt.sample.id,
                "question": prompt.sample.question,
                "images": list(prompt.sample.images),
                "task": prompt.sample.task,
                "solution": prompt.sample.answer_text(),
                "completion": text,
                "completion_tokens": int(rollout.lengths[i]),
                "reward": float(scored.rewards[i]),
                "advantage": float(advantages[i]),
                "rewards": {k: float(v[i]) for k, v in scored.per_term.items()},
                "details": scored.details[i],
                "box_space": _space_json(prompt.box_space),
                "image_spaces": [_space_json(space) for space in prompt.spaces()],
            }
            handle.write(json.dumps(row, default=str) + "\n")
    return path


def _space_json(space: Any) -> dict[str, Any] | None:
    if space is None:
        return None
    return {
        "system": space.system,
        "original_size": list(space.original_size),
        "model_size": list(space.model_size) if space.model_size else None,
    }
