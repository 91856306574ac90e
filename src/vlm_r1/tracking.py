"""Metric logging: TensorBoard / W&B / trackio through accelerate's trackers, plus a JSONL
history (``metrics.jsonl``) that the report reads without any tracker installed.

(Named ``tracking`` rather than ``logging`` so it never shadows the standard library.)
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


def as_floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Detached tensors -> floats: the one place metrics become Python numbers."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().float().mean().item() if value.numel() else float("nan")
        out[key] = float(value)
    return out


_ROLLOUT_FILE = re.compile(r"^step_(\d+)_rank\d+\.jsonl$")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL log, skipping (with one warning naming the file and line) a
    line that does not parse, such as the half-written last line of a killed run."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: skipping a line that is not valid JSON", path, number)
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                logger.warning("%s:%d: skipping a line that is not a JSON object", path, number)
    return rows


def drop_history_after(output_dir: Path, step: int) -> None:
    """Cut a run's logs back to ``step`` before it resumes from there: metrics rows after it
    (and unreadable lines) go, atomically; rollout files of later steps are deleted."""
    path = Path(output_dir) / "metrics.jsonl"
    if path.is_file():
        kept = [row for row in read_jsonl(path) if row.get("step", 0) <= step]
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    rollouts = Path(output_dir) / "rollouts"
    if rollouts.is_dir():
        for file in rollouts.iterdir():
            match = _ROLLOUT_FILE.match(file.name)
            if match and int(match.group(1)) > step:
                file.unlink()


class MetricsWriter:
    def __init__(self, accelerator: Any, output_dir: Path, is_main: bool):
        self.accelerator = accelerator
        self.path = output_dir / "metrics.jsonl"
        self.is_main = is_main

    def log(self, metrics: dict[str, Any], step: int) -> dict[str, float]:
        values = as_floats(metrics)
        if self.is_main:
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"step": step, **values}) + "\n")
            try:
                self.accelerator.log(values, step=step)
            except Exception as err:  # a tracker backend failing must not stop training
                logger.warning("tracker logging failed: %s", err)
        return values


def tracker_name(report_to: str) -> str | None:
    """Check the tracker's package is importable; fall back to none with a warning."""
    if report_to == "none":
        return None
    module = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}[report_to]
    try:
        __import__(module)
    except ImportError:
        logger.warning(
            "logging.report_to=%s but %s is not installed; writing metrics.jsonl only",
            report_to,
            module,
        )
        return None
    return report_to
