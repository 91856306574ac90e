"""The base's tower stage: per-token targets by hand, and a stage that trains the vision tower
and its merger and nothing else."""

import pytest
import torch
from safetensors.torch import load_file

from vlm_r1.data.shapes import write_shapes
from vlm_r1.demo import tower


def test_token_targets_label_cells_by_cover_hand_computed():
    objects = [  # 112 x 112, a 4 x 4 grid of 28-px cells
        ["circle", "red", "large", [0, 0, 28, 28]],  # fills cell 0
        ["star", "blue", "small", [29, 0, 50, 5]],  # 105 px2 of cell 1: its best cell
        ["square", "green", "small", [90, 30, 100, 40]],  # 100 px2 inside cell 7
        ["diamond", "orange", "large", [30, 56, 60, 86]],  # 728 px2 of cell 9, grazes 10, 13, 14
    ]
    targets = tower.token_targets(objects, 112, 112, 4, 4)
    colour = {0: tower.COLOUR_IDS["red"], 1: tower.COLOUR_IDS["blue"]}
    colour |= {7: tower.COLOUR_IDS["green"], 9: tower.COLOUR_IDS["orange"]}
    colour |= dict.fromkeys((10, 13, 14), tower.IGNORE)
    assert targets["colour"].tolist() == [colour.get(i, 0) for i in range(16)]
    shape = {0: tower.SHAPE_IDS["circle"], 1: tower.SHAPE_IDS["star"]}
    shape |= {7: tower.SHAPE_IDS["square"], 9: tower.SHAPE_IDS["diamond"]}
    shape |= dict.fromkeys((10, 13, 14), tower.IGNORE)
    assert targets["shape"].tolist() == [shape.get(i, 0) for i in range(16)]
    assert targets["has_box"].nonzero()[0].tolist() == [0, 1, 7, 9]
    assert targets["box"][9].tolist() == pytest.approx([30 / 112, 0.5, 60 / 112, 86 / 112])
    assert not targets["box"][10].any()


def test_tower_stage_trains_the_tower_and_nothing_else(tiny_path, tmp_path):
    write_shapes(tmp_path / "data", 8, 0, 0, "112", tower.TOWER_SCENES, 2.0)
    start = tiny_path("qwen3_vl")
    final = tower.train_tower(start, tmp_path / "data", tmp_path / "tower", 2, seed=0, boxes=True)
    before, after = load_file(start / "model.safetensors"), load_file(f"{final}/model.safetensors")
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(".visual." in name for name in changed)
    assert any(".visual.merger." in name for name in changed)
    assert (tmp_path / "tower" / "final" / "tokenizer.json").is_file()
