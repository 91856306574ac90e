"""Atomic checkpoints and exact resume.

A checkpoint is a folder ``checkpoint-000300/`` holding the model (``save_pretrained``: full
weights, or the LoRA adapter), the processor, optimizer and scheduler states, the trainer state
(step, data position) and every process's RNG states. It is written into a hidden temporary
folder and renamed into place, so a folder named ``checkpoint-*`` is always complete: a run
killed mid-save leaves only a temporary folder, which resume ignores and the next save removes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint-{step:06d}"


def staging_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f".staging-checkpoint-{step:06d}"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))
    ]
    return sorted(f for f in found if (f[1] / STATE_FILE).is_file())


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def begin(output_dir: str | Path, step: int) -> Path:
    """Create an empty staging folder for ``step`` (main process)."""
    stage = staging_dir(output_dir, step)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def write_rank_state(stage: Path, rank: int) -> None:
    torch.save(rng_state(), stage / f"rng_state_rank{rank}.pt")


def write_training_state(
    stage: Path, optimizer: Any, scheduler: Any, state: dict[str, Any]
) -> None:
    torch.save(optimizer.state_dict(), stage / "optimizer.pt")
    torch.save(scheduler.state_dict(), stage / "scheduler.pt")
    with open(stage / STATE_FILE, "w") as handle:  # written last: marks the content complete
        json.dump(state, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())


def commit(output_dir: str | Path, step: int, keep_last: int) -> Path:
    """Rename the staging folder into place, then drop checkpoints beyond ``keep_last``."""
    final = checkpoint_dir(output_dir, step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging_dir(output_dir, step), final)
    for _, old in list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


def load_training_state(path: Path, optimizer: Any, scheduler: Any, rank: int) -> None:
    optimizer.load_state_dict(
        torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    )
    scheduler.load_state_dict(
        torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False)
    )
    rng_file = path / f"rng_state_rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
