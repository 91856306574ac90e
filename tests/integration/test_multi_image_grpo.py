"""GRPO on two-image REC rows (VLM-R1 #354): the rows train end to end, the model is told to
name the image, each reward reads a box in its own image's coordinate system, and the logged
rewards are what the rewards give for the logged completions."""

import json
import math
from pathlib import Path

import pytest
from two_image_rec import write_two_image_rec

from vlm_r1.config import load_config
from vlm_r1.models.boxes import BoxSpace
from vlm_r1.rewards import call_reward, resolve_reward
from vlm_r1.rl.trainer import run_training

# A custom reward that writes, for each rollout row, what a perfect model would answer (the
# target's box in its image's system, naming the image) and scores it with rec_acc: all 1
# only if the trainer hands every image's box space to the rewards, in prompt order.
PERFECT_ANSWER = """
import json
from vlm_r1.models.boxes import round_boxes, to_model
from vlm_r1.rewards import call_reward, resolve_reward


def perfect(completions, solutions, image_box_spaces):
    texts = []
    for solution, spaces in zip(solutions, image_box_spaces):
        (number,) = solution.images
        space = spaces[number - 1]
        box = round_boxes(to_model([solution.boxes[0]], space), space)[0]
        item = {"bbox_2d": [int(v) for v in box], "image": number}
        texts.append("<answer>%s</answer>" % json.dumps([item]))
    spec = resolve_reward("rec_acc")  # IoU >= 0.5: rounding to model units costs a little IoU
    return call_reward(spec, texts, solutions, image_box_spaces=image_box_spaces).scores
"""


def space_of(entry):
    size = entry["model_size"]
    return BoxSpace(entry["system"], tuple(entry["original_size"]), tuple(size) if size else None)


@pytest.mark.slow
def test_three_grpo_steps_on_two_image_rows(make_config, tmp_path):
    oracle = tmp_path / "perfect.py"
    oracle.write_text(PERFECT_ANSWER)
    data = write_two_image_rec(tmp_path / "two", n=8, seed=2)
    config = load_config(
        make_config(
            name="two",
            data={"train": str(data)},
            rewards=[
                {"name": "rec_iou", "weight": 1.0},
                {"name": "format", "weight": 0.5},
                {"name": f"{oracle}:perfect", "weight": 0.0},
            ],
        )
    )
    run_training(config)
    out = Path(config.checkpoint.output_dir)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3]
    for h in history:
        assert math.isfinite(h["loss"]) and h[f"reward/{oracle}:perfect"] == 1.0
    lines = [
        json.loads(line)
        for f in sorted((out / "rollouts").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert len(lines) == 3 * 2 * 4  # steps x prompts x generations
    assert {line["question"] for line in lines} == {"Find the red square."}
    # The logged rewards are rec_iou of the logged completions, each box in its image's system.
    for line in lines:
        assert len(line["images"]) == 2 and len(line["image_spaces"]) == 2
        spaces = tuple(space_of(s) for s in line["image_spaces"])
        solution = json.loads(line["solution"])
        again = call_reward(
            resolve_reward("rec_iou"), [line["completion"]], [solution], image_box_spaces=[spaces]
        )
        assert line["rewards"]["rec_iou"] == pytest.approx(again.scores[0])
