"""Metric logging: TensorBoard / W&B / trackio through accelerate's trackers, plus a JSONL
history (``metrics.jsonl``) that the report reads without any tracker installed.

W&B and trackio also get each written rollout step (``rollouts/step_*_rank0.jsonl``) as a
table: prompt, completion, solution, rewards, advantage and the image with the ground-truth
(green) and predicted (red) boxes drawn on it.

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
from PIL import Image

from vlm_r1.rollout_images import draw_rollout

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


#: Trackers whose library has ``Table`` and ``Image`` types taking ``Table(columns=, data=)``
#: and ``Image(PIL image)``: they get the rollout tables. (TensorBoard gets scalars only.)
TABLE_TRACKERS = ("wandb", "trackio")
#: Completions of one step sent to a tracker table, spread evenly over the step's groups: a
#: tracker stores every image it is sent, and the full rows stay in ``rollouts/``.
TABLE_ROWS = 32
#: The rollout files that feed tables: the main process's own (rank 0), one per logged step.
_MAIN_ROLLOUT_FILE = re.compile(r"^step_(\d+)_rank0\.jsonl$")


class MetricsWriter:
    """Appends metrics to ``metrics.jsonl`` and sends them, and the rollout tables, to the
    trackers (main process only)."""

    def __init__(self, accelerator: Any, output_dir: Path, is_main: bool):
        self.accelerator = accelerator
        self.path = output_dir / "metrics.jsonl"
        self.rollouts = output_dir / "rollouts"
        self.is_main = is_main
        #: Rollout files already sent to the trackers, by identity: those present now belong to
        #: the run's history (a resumed run's previous process sent them); a file that resume
        #: deletes and this process writes again is a new one.
        self._sent = {_identity(p) for _, p in rollout_files(self.rollouts)} if is_main else set()

    def log(self, metrics: dict[str, Any], step: int) -> dict[str, float]:
        values = as_floats(metrics)
        if self.is_main:
            # Rollouts of earlier steps first: a tracker such as W&B drops a step lower than
            # the last one it was given.
            self.publish_rollouts()
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"step": step, **values}) + "\n")
            try:
                self.accelerator.log(values, step=step)
            except Exception as err:  # a tracker backend failing must not stop training
                logger.warning("tracker logging failed: %s", err)
        return values

    def publish_rollouts(self) -> None:
        """Send every rollout file written since the last call to each table tracker, as the
        table ``rollouts`` at the file's step. The trainer writes a step's rollouts after
        logging its metrics, so they go out with the next log, or with the final save."""
        trackers = [t for t in self.accelerator.trackers if t.name in TABLE_TRACKERS]
        if not self.is_main or not trackers:
            return
        for step, path in rollout_files(self.rollouts):
            identity = _identity(path)
            if identity in self._sent:
                continue
            self._sent.add(identity)
            columns, data = rollout_table(read_jsonl(path))
            for tracker in trackers:
                try:
                    tracker.log({"rollouts": tracker_table(tracker.name, columns, data)}, step=step)
                except Exception as err:  # a tracker backend failing must not stop training
                    logger.warning("%s: logging the rollout table failed: %s", tracker.name, err)


def _identity(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return path.name, stat.st_mtime_ns, stat.st_size


def rollout_files(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the main process's rollout files, in step order."""
    if not folder.is_dir():
        return []
    found = [(_MAIN_ROLLOUT_FILE.match(p.name), p) for p in folder.iterdir()]
    return sorted((int(m.group(1)), p) for m, p in found if m)


def spread(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items, evenly spaced from the first: a table shows rows from across
    the step's groups rather than the first few groups only."""
    if len(items) <= limit:
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def rollout_table(
    rows: list[dict[str, Any]], limit: int = TABLE_ROWS
) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of one step's rollout table; the ``image`` cell is a PIL image with the
    boxes drawn (``rollout_images.draw_rollout``, at the image's own size) or None. Every reward term gets its own column."""
    chosen = spread(rows, limit)
    terms = sorted({name for row in chosen for name in row.get("rewards", {})})
    columns = [
        "step",
        "sample_id",
        "task",
        "prompt",
        "completion",
        "solution",
        "reward",
        "advantage",
        *(f"reward/{name}" for name in terms),
        "image",
    ]
    data = [
        [
            row.get("step"),
            str(row.get("sample_id", "")),
            row.get("task"),
            row.get("question", ""),
            row.get("completion", ""),
            row.get("solution", ""),
            row.get("reward"),
            row.get("advantage"),
            *(row.get("rewards", {}).get(name) for name in terms),
            draw_rollout(row, min_width=1),
        ]
        for row in chosen
    ]
    return columns, data


def tracker_table(name: str, columns: list[str], data: list[list[Any]]) -> Any:
    """The tracker library's own table, PIL images turned into its image type (W&B and trackio
    share the ``Table``/``Image`` names and signatures)."""
    library = __import__(name)

    def cell(value: Any) -> Any:
        return library.Image(value) if isinstance(value, Image.Image) else value

    return library.Table(columns=columns, data=[[cell(v) for v in row] for row in data])


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
