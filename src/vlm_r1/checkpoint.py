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
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm_r1.errors import UserFacingError

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
#: Where each engine keeps optimizer state (``trainer_state.json``'s ``launch.engine`` says which).
OPTIMIZER_FILES = {
    "replicated": "optimizer.pt",  # one file, written by the main process
    "fsdp2": "optimizer",  # torch.distributed.checkpoint folder, a shard per process
    "deepspeed": "deepspeed",  # DeepSpeed's own checkpoint folder (module, ZeRO partitions)
}
DEEPSPEED_TAG = "state"


class CheckpointError(UserFacingError, OSError):
    """A checkpoint file is missing, truncated or unreadable; the message names the file."""

    def __init__(self, file: Path, problem: str):
        super().__init__(f"checkpoint file {file}: {problem}")
        self.file = file


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain numbers only, so it loads with
    ``torch.load(weights_only=True)`` (no pickled objects: a checkpoint cannot run code)."""
    version, mt_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(mt_state, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
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


def write_state(stage: Path, state: dict[str, Any]) -> None:
    """The trainer state, written last by the main process: marks the content complete."""
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
    file = path / STATE_FILE
    try:
        state = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(file, f"unreadable ({err})") from err
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(file, "has no 'step'")
    return state


def load_tensors(file: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only``): loading a
    checkpoint never unpickles arbitrary objects. Errors name the file."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError/UnpicklingError/EOFError/...
        raise CheckpointError(file, f"cannot be loaded ({type(err).__name__}: {err})") from err


def load_rank_state(path: Path, rank: int) -> None:
    """This process's RNG states, if the checkpoint has them."""
    rng_file = path / f"rng_state_rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(load_tensors(rng_file))


# ------------------------------------------------------------------------------ integrity
def verify(path: Path) -> None:
    """Raise ``CheckpointError`` naming the first missing, truncated or unreadable file.

    Cheap (reads headers and zip directories, not the tensors): the trainer state parses, the
    optimizer, scheduler and RNG archives have their zip directory (``torch.save`` writes zip
    files, whose directory is at the end, so truncation removes it), and every safetensors file
    is as long as its header says.
    """
    if not path.is_dir():
        raise CheckpointError(path, "no such checkpoint folder")
    state = read_state(path)
    engine = state.get("launch", {}).get("engine", "replicated")
    optimizer = path / OPTIMIZER_FILES.get(engine, "optimizer.pt")
    if engine == "fsdp2":
        if not (optimizer / ".metadata").is_file():
            raise CheckpointError(optimizer / ".metadata", "missing")
    elif engine == "deepspeed":
        shards = sorted((optimizer / DEEPSPEED_TAG).glob("*optim_states.pt"))
        if not shards:
            raise CheckpointError(optimizer / DEEPSPEED_TAG, "no ZeRO optimizer states")
        for file in shards:
            _verify_zip(file)
    else:
        _verify_zip(optimizer)
    if engine != "deepspeed":
        _verify_zip(path / "scheduler.pt")
    for file in sorted(path.glob("rng_state_rank*.pt")):
        _verify_zip(file)
    weights = sorted((path / "model").rglob("*.safetensors"))
    if not weights:
        raise CheckpointError(path / "model", "no *.safetensors weights")
    for file in weights:
        verify_safetensors(file)


def _verify_zip(file: Path) -> None:
    if not file.is_file():
        raise CheckpointError(file, "missing")
    try:
        with zipfile.ZipFile(file):
            pass
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(file, f"truncated or corrupt ({err})") from err


def verify_safetensors(file: Path) -> None:
    """The file holds its 8-byte header length, a JSON header, and every tensor's bytes."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if 8 + header_len > size:
                raise ValueError("shorter than its header")
            header = json.loads(handle.read(header_len))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as err:
        raise CheckpointError(file, f"not a readable safetensors file ({err})") from err
    if 8 + header_len + end > size:
        raise CheckpointError(
            file, f"truncated: {size} bytes, its header needs {8 + header_len + end}"
        )
