"""W&B and trackio, the real libraries, without a network (``WANDB_MODE=offline``; trackio
writes a local SQLite store): the metrics writer logs scalars and a rollout table (prompt,
completion, rewards, image with the boxes drawn) to each, and what the library stored is read
back from its files.

Each runs in its own process: both libraries read their storage folders from the environment
once (trackio at import), so the test's folders must be set before they load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import wandb_offline
from PIL import Image

from vlm_r1.tracking import tracker_name

GREEN, RED = (0, 170, 0), (220, 0, 0)

#: Two steps as the GRPO trainer runs them: log a step's metrics, then write its rollouts;
#: the final save sends the last step's table. Then the library's own record is dumped.
SCRIPT = r"""
import json, sys
from pathlib import Path
from accelerate import Accelerator
from vlm_r1.tracking import MetricsWriter

name, run, rows = sys.argv[1], Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
accelerator = Accelerator(log_with=name)
accelerator.init_trackers("vlm-r1-test", config={"algo.beta": 0.0})
writer = MetricsWriter(accelerator, run, True)
(run / "rollouts").mkdir()
for step in (1, 2):
    writer.log({"reward": 0.25 * step, "kl": 0.0}, step)
    lines = [json.dumps({**r, "step": step}) for r in rows]
    (run / "rollouts" / f"step_{step:06d}_rank0.jsonl").write_text("\n".join(lines) + "\n")
writer.publish_rollouts()
run_name = accelerator.get_tracker(name, unwrap=True).name
accelerator.end_training()
if name == "trackio":
    from trackio.sqlite_storage import SQLiteStorage
    from trackio.utils import MEDIA_DIR
    logs = SQLiteStorage.get_logs("vlm-r1-test", run_name)
    (run / "trackio_logs.json").write_text(json.dumps({"logs": logs, "media": str(MEDIA_DIR)}))
"""


def rollout_rows(tmp_path: Path) -> list[dict]:
    image = tmp_path / "white.png"
    Image.new("RGB", (200, 100), "white").save(image)
    return [
        {
            "sample_id": f"s{i}",
            "group": i // 2,
            "question": "Where is the red circle?",
            "images": [str(image)],
            "task": "rec",
            "solution": "[10, 10, 50, 40]",
            "completion": f'<answer>[{{"bbox_2d": [500, 200, 900, 800]}}]</answer> {i}',
            "reward": 1.5,
            "advantage": 0.5 - i,
            "rewards": {"accuracy": 1.0, "format": 0.5},
            "box_space": {"system": "norm1000", "original_size": [200, 100], "model_size": None},
        }
        for i in range(2)
    ]


def run_script(name: str, tmp_path: Path, env: dict[str, str]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(rollout_rows(tmp_path)))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, name, str(run), str(rows)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def assert_boxes_drawn(image: Image.Image) -> None:
    image = image.convert("RGB")
    assert image.size == (200, 100)
    assert image.getpixel((10, 25)) == GREEN  # the truth box's left edge
    assert image.getpixel((100, 50)) == RED  # the prediction's, mapped from norm1000


# ------------------------------------------------------------------------------- W&B
def test_wandb_offline_gets_scalars_and_a_rollout_table_with_images(tmp_path):
    pytest.importorskip("wandb", reason="pip install -e '.[dev]' installs wandb")
    run_script("wandb", tmp_path, wandb_offline.offline_env(tmp_path))
    found = wandb_offline.offline_run(tmp_path)
    history = wandb_offline.history(found)
    assert [(h["_step"], h["reward"]) for h in history] == [(1, 0.25), (2, 0.5)]
    # Each step's row holds its table: step 1's went out with step 2's log (before its
    # scalars), step 2's with the final save.
    assert [(h["rollouts/_type"], h["rollouts/nrows"]) for h in history] == [("table-file", 2)] * 2
    assert wandb_offline.table_artifacts(found) == 2
    table, files = wandb_offline.last_table(found)
    columns = table["columns"]
    assert {"prompt", "completion", "reward", "reward/accuracy", "image"} <= set(columns)
    first = dict(zip(columns, table["data"][0], strict=True))
    assert first["step"] == 2 and first["prompt"] == "Where is the red circle?"
    assert first["completion"].startswith("<answer>") and first["reward/format"] == 0.5
    assert_boxes_drawn(Image.open(files[first["image"]["path"]]))


# ---------------------------------------------------------------------------- trackio
def test_trackio_locally_gets_scalars_and_a_rollout_table_with_images(tmp_path):
    pytest.importorskip("trackio", reason="pip install -e '.[dev]' installs trackio")
    run = run_script("trackio", tmp_path, {"TRACKIO_DIR": str(tmp_path / "trackio")})
    dumped = json.loads((run / "trackio_logs.json").read_text())
    logs = dumped["logs"]
    assert [(r["step"], r["reward"]) for r in logs if "reward" in r] == [(1, 0.25), (2, 0.5)]
    tables = [(r["step"], r["rollouts"]) for r in logs if "rollouts" in r]
    assert [(step, t["_type"]) for step, t in tables] == [
        (1, "trackio.table"),
        (2, "trackio.table"),
    ]
    rows = tables[-1][1]["_value"]
    assert [r["sample_id"] for r in rows] == ["s0", "s1"]
    first = rows[0]
    assert first["step"] == 2 and first["prompt"] == "Where is the red circle?"
    assert first["completion"].startswith("<answer>") and first["reward/accuracy"] == 1.0
    assert first["image"]["_type"] == "trackio.image"
    assert_boxes_drawn(Image.open(Path(dumped["media"]) / first["image"]["file_path"]))


@pytest.mark.parametrize("name", ["wandb", "trackio"])
def test_a_missing_tracker_falls_back_to_none_with_a_warning(name, monkeypatch, caplog):
    pytest.importorskip(name)
    assert tracker_name(name) == name
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it fails
    assert tracker_name(name) is None
    assert f"logging.report_to={name} but {name} is not installed" in caplog.text
