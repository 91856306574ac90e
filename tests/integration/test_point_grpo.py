"""GRPO on the shapes point task with the tiny Qwen2.5-VL: click rows train end to end, and the
logged point rewards are what the rewards give for the logged completions in the family's
coordinate system."""

import json
import math
from pathlib import Path

import pytest

from vlm_r1.config import load_config
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models.adapter import POINT_TEMPLATE
from vlm_r1.models.boxes import BoxSpace
from vlm_r1.rewards import call_reward, resolve_reward
from vlm_r1.rl.trainer import run_training

# A custom reward (file.py:function) that writes, for each rollout row, the click a perfect
# model would write (the box centre in the row's own box space) and scores it with point_in_box:
# all 1 only if the trainer hands point samples their solution and the family's box space.
CENTRE_CLICK = """
import json
from vlm_r1.models.boxes import points_to_model, round_boxes
from vlm_r1.rewards import call_reward, resolve_reward
from vlm_r1.rewards.common import gt_boxes


def centre_click(completions, solutions, box_spaces, task):
    assert set(task) == {"point"}
    texts = []
    for solution, space in zip(solutions, box_spaces):
        x1, y1, x2, y2 = gt_boxes(solution)[0][0]
        centre = round_boxes(points_to_model([[(x1 + x2) / 2, (y1 + y2) / 2]], space), space)[0]
        texts.append("<answer>%s</answer>" % json.dumps([int(v) for v in centre]))
    spec = resolve_reward("point_in_box")
    return call_reward(spec, texts, solutions, box_spaces=box_spaces).scores
"""


@pytest.mark.slow
def test_two_grpo_steps_on_point_data(make_config, tmp_path):
    oracle = tmp_path / "centre_click.py"
    oracle.write_text(CENTRE_CLICK)
    data = write_shapes(
        tmp_path / "shapes", n_train=8, n_eval=0, seed=1, image_size="112", tasks=["point"]
    )["point_train"]
    config = load_config(
        make_config(
            name="point",
            data={"train": str(data)},
            rewards=[
                {"name": "toy_rewards:digit_fraction", "weight": 1.0},
                {"name": "accuracy", "weight": 1.0},
                {"name": "point_distance", "weight": 0.5},
                {"name": f"{oracle}:centre_click", "weight": 0.0},
            ],
            optim={"max_steps": 2},
        )
    )
    metrics = run_training(config)
    out = Path(config.checkpoint.output_dir)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2]
    for h in history:
        for key in ("loss", "reward", "reward/accuracy", "reward/point_distance"):
            assert math.isfinite(h[key]), key
        assert 0.0 <= h["reward/accuracy"] <= 1.0 and 0.0 <= h["reward/point_distance"] <= 1.0
        assert h[f"reward/{oracle}:centre_click"] == 1.0
    assert math.isfinite(metrics["loss"])
    lines = [
        json.loads(line)
        for f in sorted((out / "rollouts").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert len(lines) == 2 * 2 * 4  # steps x prompts x generations
    for line in lines:
        assert line["task"] == "point" and line["question"].startswith("Click ")
        space = line["box_space"]
        assert space["system"] == "abs_resized"  # Qwen2.5-VL: pixels of the resized input
        box_space = BoxSpace(
            space["system"], tuple(space["original_size"]), tuple(space["model_size"])
        )
        solution = json.loads(line["solution"])  # the target's box, original pixels
        for name, method in (("accuracy", "point_in_box"), ("point_distance", "point_distance")):
            again = call_reward(
                resolve_reward(method), [line["completion"]], [solution], box_spaces=[box_space]
            )
            assert line["rewards"][name] == pytest.approx(again.scores[0]), (name, line)
        assert line["details"]["accuracy"]["method"] == "point_in_box"
    saved = json.loads((out / "final" / "vlm_r1_prompt.json").read_text())
    assert saved["templates"]["point"] == POINT_TEMPLATE
