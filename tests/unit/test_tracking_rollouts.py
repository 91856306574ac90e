"""Rollout tables for the trackers: which rows, which columns, the image with its boxes in
original pixels, and when each step's table is sent (once, in step order, never a resumed
run's history again). The real W&B and trackio libraries: test_tracking_trackers.py."""

import json
import os
import types

import numpy as np
import pytest
from PIL import Image

from vlm_r1 import tracking
from vlm_r1.rollout_images import draw_rollout, rollout_boxes
from vlm_r1.tracking import (
    MetricsWriter,
    rollout_table,
    spread,
)


def rollout_image(row):
    """What the trackers' tables show: the rollout drawn at its image's own size."""
    return draw_rollout(row, min_width=1)


GREEN, RED = (0, 170, 0), (220, 0, 0)


def row(image=None, **fields):
    """A rollout row as rl/rollout_log.write_rollouts writes it (a 200 x 100 image)."""
    base = {
        "step": 3,
        "rank": 0,
        "group": 0,
        "sample_id": "s0",
        "question": "Where is the red circle?",
        "images": [str(image)] if image else [],
        "task": "rec",
        "solution": "[10, 10, 50, 40]",
        "completion": '<think>t</think><answer>[{"bbox_2d": [500, 200, 900, 800]}]</answer>',
        "completion_tokens": 20,
        "reward": 1.5,
        "advantage": 0.7,
        "rewards": {"accuracy": 1.0, "format": 0.5},
        "details": {},
        "box_space": {"system": "norm1000", "original_size": [200, 100], "model_size": None},
    }
    return {**base, **fields}


@pytest.fixture()
def picture(tmp_path):
    path = tmp_path / "white.png"
    Image.new("RGB", (200, 100), "white").save(path)
    return path


def test_predicted_boxes_are_mapped_back_to_original_pixels():
    truth, predicted = rollout_boxes(row())
    np.testing.assert_allclose(truth, [[10, 10, 50, 40]])
    # norm1000 on a 200 x 100 image: x / 1000 * 200, y / 1000 * 100.
    np.testing.assert_allclose(predicted, [[100, 20, 180, 80]])


@pytest.mark.parametrize(
    "space", [None, {"system": "polar", "original_size": [200, 100]}, {"original_size": []}]
)
def test_without_a_usable_box_space_boxes_stay_as_written(space):
    _, predicted = rollout_boxes(row(box_space=space))
    np.testing.assert_allclose(predicted, [[500, 200, 900, 800]])


def test_a_completion_without_boxes_has_none():
    truth, predicted = rollout_boxes(row(completion="<answer>none</answer>"))
    assert predicted.shape == (0, 4) and truth.shape == (1, 4)


def test_the_image_shows_truth_in_green_and_the_prediction_in_red(picture):
    image = rollout_image(row(picture))
    assert image.size == (200, 100)
    assert image.getpixel((10, 25)) == GREEN  # left edge of the truth box
    assert image.getpixel((100, 50)) == RED  # left edge of the predicted box, in pixels
    assert image.getpixel((140, 50)) == (255, 255, 255)  # inside: only outlines are drawn
    assert Image.open(picture).getpixel((10, 25)) == (255, 255, 255)  # the file is untouched


def test_no_image_or_an_unreadable_one_gives_none(tmp_path):
    assert rollout_image(row()) is None
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert rollout_image(row(broken)) is None


def test_spread_keeps_every_group_in_view():
    assert spread(list(range(64)), 8) == [0, 8, 16, 24, 32, 40, 48, 56]
    assert spread([1, 2], 8) == [1, 2]


def test_the_table_has_the_prompt_completion_rewards_and_image(picture):
    rows = [row(picture, sample_id=f"s{i}", reward=float(i)) for i in range(40)]
    rows[0]["rewards"] = {"accuracy": 1.0}  # a term absent from some rows is an empty cell
    columns, data = rollout_table(rows, limit=4)
    assert columns == [
        "step",
        "sample_id",
        "task",
        "prompt",
        "completion",
        "solution",
        "reward",
        "advantage",
        "reward/accuracy",
        "reward/format",
        "image",
    ]
    assert [r[1] for r in data] == ["s0", "s10", "s20", "s30"]
    first = dict(zip(columns, data[0], strict=True))
    assert first["prompt"] == "Where is the red circle?"
    assert first["completion"].startswith("<think>t</think>")
    assert first["reward/format"] is None and data[1][columns.index("reward/format")] == 0.5
    assert isinstance(first["image"], Image.Image)


# ------------------------------------------------------------------ when tables are sent
class RecordingTracker:
    """Stands in for accelerate's tracker of a table-capable library: records what it gets."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def log(self, values, step):
        self.calls.append((self.name, step, values))


def writer_with(tmp_path, names, monkeypatch):
    calls = []
    accelerator = types.SimpleNamespace(
        trackers=[RecordingTracker(n, calls) for n in names],
        log=lambda values, step: calls.append(("scalars", step, values)),
    )
    # The library's own Table is exercised with the real libraries elsewhere; here, plain data.
    monkeypatch.setattr(tracking, "tracker_table", lambda name, columns, data: (columns, data))
    return MetricsWriter(accelerator, tmp_path, is_main=True), calls


def write_step(run, step, mtime=None):
    folder = run / "rollouts"
    folder.mkdir(exist_ok=True)
    for rank in (0, 1):
        path = folder / f"step_{step:06d}_rank{rank}.jsonl"
        path.write_text(json.dumps(row(step=step, sample_id=f"r{rank}")) + "\n")
        if mtime is not None:
            os.utime(path, ns=(mtime, mtime))


def sent(calls):
    return [(name, step) for name, step, _ in calls]


def test_each_step_goes_out_once_before_the_next_steps_scalars(tmp_path, monkeypatch):
    writer, calls = writer_with(tmp_path, ["wandb", "tensorboard"], monkeypatch)
    for step in (1, 2, 3):
        writer.log({"reward": 0.5}, step)
        write_step(tmp_path, step)  # the trainer writes a step's rollouts after its log
    writer.publish_rollouts()  # the final save
    writer.publish_rollouts()  # nothing new
    assert sent(calls) == [
        ("scalars", 1),
        ("wandb", 1),
        ("scalars", 2),
        ("wandb", 2),
        ("scalars", 3),
        ("wandb", 3),
    ]
    columns, data = calls[1][2]["rollouts"]
    assert [r[columns.index("sample_id")] for r in data] == ["r0"]  # rank 0's file only


def test_a_resumed_run_does_not_send_its_history_again(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        write_step(tmp_path, step, mtime=1_000_000_000 * step)
    writer, calls = writer_with(tmp_path, ["trackio"], monkeypatch)
    # Resume from checkpoint 2 deletes step 3's rollouts; this process writes step 3 again.
    for path in (tmp_path / "rollouts").glob("step_000003_*"):
        path.unlink()
    writer.log({"reward": 0.5}, 3)
    write_step(tmp_path, 3)
    writer.publish_rollouts()
    assert sent(calls) == [("scalars", 3), ("trackio", 3)]


def test_without_a_table_tracker_nothing_is_read(tmp_path, monkeypatch):
    writer, calls = writer_with(tmp_path, ["tensorboard"], monkeypatch)
    write_step(tmp_path, 1)
    monkeypatch.setattr(tracking, "read_jsonl", lambda path: pytest.fail("read"))
    writer.publish_rollouts()
    assert calls == []


def test_a_failing_tracker_is_a_warning_not_a_stopped_run(tmp_path, monkeypatch, caplog):
    writer, calls = writer_with(tmp_path, ["wandb"], monkeypatch)

    def broken(values, step):
        raise RuntimeError("disk full")

    writer.accelerator.trackers[0].log = broken
    writer.log({"reward": 0.5}, 1)
    write_step(tmp_path, 1)
    writer.log({"reward": 0.5}, 2)
    assert sent(calls) == [("scalars", 1), ("scalars", 2)]
    assert "wandb: logging the rollout table failed: disk full" in caplog.text
