"""The worked custom reward (``examples/rewards/box_on_object.py``) that opens the image: its
scores on a drawn picture, and a GRPO run that names it by file path as the README shows."""

import json
import math
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from vlm_r1.config import load_config
from vlm_r1.models.boxes import BoxSpace
from vlm_r1.rewards import call_reward, resolve_reward
from vlm_r1.rl.trainer import run_training

REPO = Path(__file__).resolve().parents[2]
NAME = "examples/rewards/box_on_object.py:box_on_object"


@pytest.fixture()
def at_repo_root(monkeypatch):
    """The config names the example relative to where training starts: the repository."""
    monkeypatch.chdir(REPO)


@pytest.fixture()
def picture(tmp_path):
    """200 x 100, light grey, with a red object at pixels [120, 20, 180, 80]."""
    image = Image.new("RGB", (200, 100), (240, 240, 240))
    ImageDraw.Draw(image).rectangle([120, 20, 179, 79], fill=(200, 30, 30))
    path = tmp_path / "scene.png"
    image.save(path)
    return str(path)


def test_the_example_scores_boxes_by_the_pixels_they_cover(at_repo_root, picture):
    # The model writes 0-1000 units: [600, 200, 900, 800] is the object's pixels exactly.
    completions = [
        "<think>t</think><answer>[600, 200, 900, 800]</answer>",  # the object
        "<answer>[0, 0, 250, 500]</answer>",  # background: pixels [0, 0, 50, 50]
        "<answer>[500, 200, 700, 800]</answer>",  # pixels [100, 20, 140, 80]: half on it
        "<answer>[600, 200, 601, 201]</answer>",  # under a pixel: below min_box_pixels
        "no answer tag [600, 200, 900, 800]",
    ]
    n = len(completions)
    spec = resolve_reward(NAME, tolerance=30)
    out = call_reward(
        spec,
        completions,
        [None] * n,
        image_paths=[[picture]] * n,
        box_spaces=[BoxSpace("norm1000", (200, 100))] * n,
        problem=["Where is the red square?"] * n,
        difficulty=[3] * n,  # an extra data field this reward does not name: ignored
    )
    assert out.scores == pytest.approx([1.0, 0.0, 0.5, 0.0, 0.0])
    assert out.details[0]["box_pixels"] == 60 * 60
    assert out.details[4]["status"] == "no_answer"
    # Read as original pixels instead, the first box would lie off the 200 x 100 image.
    unmapped = call_reward(
        spec,
        completions[:1],
        [None],
        image_paths=[[picture]],
        box_spaces=[BoxSpace("abs_resized", (200, 100), (200, 100))],
    )
    assert unmapped.scores == [0.0]


@pytest.mark.slow
def test_the_example_runs_in_a_grpo_run_named_by_its_file(at_repo_root, make_config):
    terms = [{"name": NAME, "weight": 1.0, "params": {"tolerance": 24}}]
    config = load_config(
        make_config(
            rewards=[*terms, {"name": "format", "weight": 0.5}],
            optim={"prompts_per_step": 2, "micro_batch_size": 4, "max_steps": 2},
        )
    )
    metrics = run_training(config)
    assert math.isfinite(metrics[f"reward/{NAME}"])
    out = Path(config.checkpoint.output_dir)
    rows = [
        json.loads(line)
        for path in sorted((out / "rollouts").glob("step_*_rank0.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert len(rows) == 2 * 2 * 4  # 2 steps x 2 prompts x 4 completions
    for row in rows:  # the reward ran on every completion, without raising
        details = row["details"][NAME]
        assert "status" in details and "error" not in details, details
