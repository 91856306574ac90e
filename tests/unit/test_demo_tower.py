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


def test_tower_loss_is_two_cross_entropies_plus_the_weighted_box_loss_by_hand():
    torch.manual_seed(0)
    heads = torch.nn.ModuleDict(
        {
            "colour": torch.nn.Linear(3, len(tower.COLOUR_IDS) + 1),
            "shape": torch.nn.Linear(3, len(tower.SHAPE_IDS) + 1),
            "box": torch.nn.Linear(3, 4),
        }
    )
    tokens = torch.randn(3, 3)
    batch = {  # token 0: an object; 1: background; 2: grazed (ignored)
        "colour": torch.tensor([2, 0, tower.IGNORE]),
        "shape": torch.tensor([1, 0, tower.IGNORE]),
        "box": torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.0] * 4, [0.0] * 4]),
        "has_box": torch.tensor([True, False, False]),
    }

    def nll(logits, target):  # -log softmax at the target
        return -(logits[target] - logits.exp().sum().log())

    with torch.no_grad():
        colour, shape = heads["colour"](tokens[:2]), heads["shape"](tokens[:2])
        classes = sum(
            (nll(colour[i], batch["colour"][i]) + nll(shape[i], batch["shape"][i])) / 2
            for i in range(2)
        )
        error = (heads["box"](tokens[:1]).sigmoid() - batch["box"][:1]).abs()
        smooth = torch.where(error < 0.05, 0.5 * error**2 / 0.05, error - 0.025).mean()
        plain = tower.tower_loss(heads, tokens, batch, boxes=False)
        with_boxes = tower.tower_loss(heads, tokens, batch, boxes=True)
    assert plain.item() == pytest.approx(classes.item(), rel=1e-5)
    assert with_boxes.item() == pytest.approx(
        (classes + tower.BOX_WEIGHT * smooth).item(), rel=1e-5
    )
