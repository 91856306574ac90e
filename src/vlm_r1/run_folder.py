"""What a run folder may hold, and the rules for starting, overwriting or resuming a run there.

Decided before any model is loaded, on every process alike (read-only), so a wrong command
costs seconds, not a model load:

* A new run (``checkpoint.resume=none``) refuses a folder that already holds a run: a complete
  checkpoint, ``final/`` or logged metrics. ``--overwrite`` deletes that run's files first
  (only the files a run writes; anything else in the folder is left alone).
* ``--resume`` (``auto``) continues from the newest checkpoint that passes ``checkpoint.verify``;
  a damaged newest one is skipped with a warning that names the file, and the previous complete
  one is used. An explicit checkpoint path must be intact.
* Resume restores the saved config: a value that differs from the checkpoint's is an error,
  unless its key is one that cannot change the numbers (``MAY_CHANGE_ON_RESUME``); those
  changes are printed.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_r1 import checkpoint as ckpt
from vlm_r1.config import ConfigError

logger = logging.getLogger(__name__)

#: Dotted config keys (``fnmatch`` patterns) that a resumed run may change: how long to run,
#: how often to save and log, and switches proven not to change results (``speed.*``,
#: gradient checkpointing, vLLM's memory share).
MAY_CHANGE_ON_RESUME = (
    "optim.max_steps",
    "checkpoint.*",
    "logging.*",
    "speed.*",
    "model.gradient_checkpointing",
    "rollout.vllm_gpu_memory_utilization",
    "rollout.prompts_per_generation",  # same completions for every value (memory only)
    "eval.*",  # validation restores every mode and RNG state: training is the same without it
)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
#: What a run writes into its folder (``--overwrite`` removes exactly these).
RUN_FILES = (CONFIG_FILE, METRICS_FILE, "final", "final.tmp", "rollouts", "vlm-r1")
RUN_GLOBS = ("checkpoint-*", ".staging-checkpoint-*")


@dataclass
class RunPlan:
    """Where training starts: a checkpoint to load (None: from the initial weights)."""

    checkpoint: Path | None
    changes: list[tuple[str, Any, Any]]


def holds_run(folder: Path) -> bool:
    """A complete checkpoint, a ``final/`` model or logged metrics: a run happened here."""
    metrics = folder / METRICS_FILE
    return bool(
        ckpt.list_checkpoints(folder)
        or (folder / "final").is_dir()
        or (metrics.is_file() and metrics.stat().st_size > 0)
    )


def clear_run(folder: Path) -> None:
    """Delete the files a run wrote into ``folder`` (``--overwrite``); nothing else."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name in RUN_FILES or any(fnmatch.fnmatch(path.name, g) for g in RUN_GLOBS):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def plan_run(
    checkpoint_config: Any, config: dict[str, Any], defaults: dict[str, Any] | None = None
) -> RunPlan:
    """Apply the rules above; raises ``ConfigError`` (before any model loads) when they fail.

    ``defaults``: the recipe's config with every setting at its default. A setting that the
    saved run's config lacks (it was added to vlm-r1 after the run was saved) is not a change
    when the new value is its default: new settings default to the behaviour before them.

    Does not touch the folder: ``--overwrite``'s deletion is ``clear_run``, done by the main
    process once every process has agreed on the plan.
    """
    folder = Path(checkpoint_config.output_dir)
    setting = checkpoint_config.resume
    if setting == "none":
        if holds_run(folder) and not checkpoint_config.overwrite:
            raise ConfigError(
                f"{folder} already holds a run; use --resume to continue it or --overwrite "
                "to delete it and start again (or pick another checkpoint.output_dir)"
            )
        return RunPlan(None, [])
    path = _pick_checkpoint(folder, setting)
    if path is None:
        return RunPlan(None, [])
    saved = _saved_config(path, folder)
    if saved is not None and "launch" not in saved:  # written before runs recorded their engine
        config = {k: v for k, v in config.items() if k != "launch"}
    changes = config_changes(saved, config, defaults) if saved is not None else []
    refused = [c for c in changes if not _may_change(c[0])]
    if refused:
        shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in refused)
        raise ConfigError(
            f"resuming from {path} with settings that differ from the saved run ({shown}). "
            "Resume continues the saved run; only "
            f"{', '.join(MAY_CHANGE_ON_RESUME)} may change. Start a new run (another "
            "checkpoint.output_dir, or --overwrite) to train with other settings"
        )
    return RunPlan(path, changes)


def _pick_checkpoint(folder: Path, setting: str) -> Path | None:
    if setting != "auto":
        path = Path(setting)
        ckpt.verify(path)  # an explicit choice must be intact: no silent fallback
        return path
    for _, path in reversed(ckpt.list_checkpoints(folder)):
        try:
            ckpt.verify(path)
        except ckpt.CheckpointError as err:
            logger.warning("%s; falling back to the previous checkpoint", err)
            continue
        return path
    staged = [p for p in folder.glob("checkpoint-*") if p.is_dir()]
    if staged:
        logger.warning(
            "no complete checkpoint in %s (%d damaged); starting from the initial weights",
            folder,
            len(staged),
        )
    return None


def _saved_config(path: Path, folder: Path) -> dict[str, Any] | None:
    """The config the checkpoint was trained with (older checkpoints: the run's config.json)."""
    for file in (path / CONFIG_FILE, folder / CONFIG_FILE):
        if file.is_file():
            try:
                return json.loads(file.read_text())
            except json.JSONDecodeError as err:
                raise ckpt.CheckpointError(file, f"not valid JSON ({err.msg})") from err
    return None


def config_changes(
    saved: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, new value)`` for every leaf that differs; a key absent from
    ``saved`` whose new value is its value in ``defaults`` does not differ (see ``plan_run``)."""
    old_flat, new_flat = _flatten(saved), _flatten(new)
    default_flat = _flatten(defaults or {})
    changes = []
    for key in sorted(set(old_flat) | set(new_flat)):
        old, value = old_flat.get(key, _ABSENT), new_flat.get(key, _ABSENT)
        if old is _ABSENT and key in default_flat and value == default_flat[key]:
            continue
        if old != value:
            changes.append((key, old, value))
    return changes


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _may_change(key: str) -> bool:
    return any(fnmatch.fnmatch(key, pattern) for pattern in MAY_CHANGE_ON_RESUME)


def log_changes(changes: list[tuple[str, Any, Any]]) -> None:
    for key, old, new in changes:
        logger.warning("resume: %s changed from %r to %r", key, old, new)
