"""Metric logging: TensorBoard / W&B / trackio through accelerate's trackers, plus a JSONL
history (``metrics.jsonl``) that the report reads without any tracker installed.

(Named ``tracking`` rather than ``logging`` so it never shadows the standard library.)
"""

from __future__ import annotations

import json
import logging
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
