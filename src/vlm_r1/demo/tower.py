"""The base's first stage: the vision tower pretrained alone, as a real VLM starts from a
pretrained vision encoder (SigLIP, a ViT) before any language model reads it.

Linear heads read each image token and are trained to say the colour and the shape of the
object that covers it ("background" where none does) and that object's box (smooth L1 on its
corners as fractions of the image); the heads are dropped after, the tower and merger kept. A
probe (``scripts/pretrain_probe.py``, ``docs/demo_history.md``) found that with the tower frozen
after this stage, its tokens keep colour and shape (linear probes 0.99 / 0.91 after 6,000
language-model steps), where training end to end through the language model let the colour fade
(0.43). That alone did not make the language model read them: binding the words took the base's
later stages. Qwen families only: the tokens come in the merge grid's order.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlm_r1.data.shapes.world import COLOURS, SHAPES
from vlm_r1.models import load_model

#: The shapes tasks whose training scenes the tower sees.
TOWER_SCENES = ("named", "locate", "rec_mix")
#: Class 0 of each head is "no object here".
COLOUR_IDS = {name: index + 1 for index, name in enumerate(COLOURS)}
SHAPE_IDS = {name: index + 1 for index, name in enumerate(SHAPES)}
IGNORE = -100
TOWER_BATCH = 32
TOWER_LR = 1e-3
#: The box loss's weight beside the two classification losses (its values are ~0.01-0.1).
BOX_WEIGHT = 10.0


def token_targets(objects: Sequence, width: int, height: int, rows: int, cols: int) -> dict:
    """What each image token of a ``rows`` x ``cols`` grid over the scene should say.

    A token is labelled with the object that covers most of its cell when that object fills at
    least a quarter of the cell, or when the cell is the one that holds most of the object (so
    every object has a token, however small); a cell no object touches is background (class 0);
    one only grazed is ignored. ``box`` is the labelled object's box as fractions of the image
    (zeros elsewhere), ``has_box`` marks the tokens that have one."""
    cell_w, cell_h = width / cols, height / rows
    overlap = np.zeros((rows * cols, len(objects)))
    for index in range(rows * cols):
        x0, y0 = (index % cols) * cell_w, (index // cols) * cell_h
        for k, (*_, (x1, y1, x2, y2)) in enumerate(objects):
            dx = min(x2, x0 + cell_w) - max(x1, x0)
            dy = min(y2, y0 + cell_h) - max(y1, y0)
            overlap[index, k] = max(dx, 0) * max(dy, 0)
    colour = np.zeros(rows * cols, dtype=np.int64)
    shape = np.zeros(rows * cols, dtype=np.int64)
    box = np.zeros((rows * cols, 4), dtype=np.float32)
    has_box = np.zeros(rows * cols, dtype=bool)
    best_cell = overlap.argmax(0) if len(objects) else []
    for index in range(rows * cols):
        if not overlap[index].any():
            continue
        k = int(overlap[index].argmax())
        if overlap[index, k] >= 0.25 * cell_w * cell_h or best_cell[k] == index:
            shape_name, colour_name, _size, (x1, y1, x2, y2) = objects[k]
            colour[index], shape[index] = COLOUR_IDS[colour_name], SHAPE_IDS[shape_name]
            box[index] = (x1 / width, y1 / height, x2 / width, y2 / height)
            has_box[index] = True
        else:
            colour[index] = shape[index] = IGNORE
    return {"colour": colour, "shape": shape, "box": box, "has_box": has_box}


def tower_batch(processor, rows: list[dict], folder: Path) -> dict[str, torch.Tensor]:
    """Pixels and per-token targets for shapes ``rows`` (images relative to ``folder``)."""
    images = [Image.open(folder / row["image"]).convert("RGB") for row in rows]
    encoded = processor.image_processor(images=images, return_tensors="pt")
    merge = processor.image_processor.merge_size
    targets = [
        token_targets(row["objects"], row["width"], row["height"], h // merge, w // merge)
        for row, (_, h, w) in zip(rows, encoded["image_grid_thw"].tolist(), strict=True)
    ]
    batch = {key: torch.from_numpy(np.concatenate([t[key] for t in targets])) for key in targets[0]}
    return {**batch, "pixel_values": encoded["pixel_values"], "grid": encoded["image_grid_thw"]}


def tower_loss(heads: torch.nn.ModuleDict, tokens: torch.Tensor, batch: dict, boxes: bool):
    """Cross-entropy on each token's colour and shape, plus the box loss where ``boxes``."""
    classes = torch.nn.functional.cross_entropy
    loss = classes(heads["colour"](tokens), batch["colour"], ignore_index=IGNORE)
    loss = loss + classes(heads["shape"](tokens), batch["shape"], ignore_index=IGNORE)
    if boxes and batch["has_box"].any():
        predicted = heads["box"](tokens[batch["has_box"]]).sigmoid()
        loss = loss + BOX_WEIGHT * torch.nn.functional.smooth_l1_loss(
            predicted, batch["box"][batch["has_box"]], beta=0.05
        )
    return loss


def train_tower(
    model_path: str | Path,
    data: Path,
    out: Path,
    steps: int,
    seed: int,
    boxes: bool = True,
    say=print,
) -> Path:
    """Train ``model_path``'s vision tower and merger on the shapes scenes under ``data`` for
    ``steps`` (AdamW, cosine schedule with a short warmup); returns ``out/final``, the whole
    checkpoint with the trained tower."""
    torch.manual_seed(seed)
    _adapter, model, processor = load_model(str(model_path))
    rows = []
    for task in TOWER_SCENES:
        with open(data / f"{task}_train.jsonl", encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle]
    random.Random(seed).shuffle(rows)
    width = model.config.text_config.hidden_size
    heads = torch.nn.ModuleDict(
        {
            "colour": torch.nn.Linear(width, len(COLOURS) + 1),
            "shape": torch.nn.Linear(width, len(SHAPES) + 1),
            "box": torch.nn.Linear(width, 4),
        }
    )
    tower = model.model.visual
    optimizer = torch.optim.AdamW(
        [*tower.parameters(), *heads.parameters()], lr=TOWER_LR, weight_decay=0
    )
    warmup = max(1, min(20, steps // 5))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * s / steps))
    )
    tower.train()
    batch_size = min(TOWER_BATCH, len(rows))
    for step in range(steps):
        start = step * batch_size % (len(rows) - batch_size + 1)
        batch = tower_batch(processor, rows[start : start + batch_size], data)
        output = model.get_image_features(
            pixel_values=batch["pixel_values"], image_grid_thw=batch["grid"], return_dict=True
        )
        loss = tower_loss(heads, torch.cat(list(output.pooler_output)), batch, boxes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 200 == 0 or step == steps - 1:
            say(f"tower step {step}: loss {loss.item():.3f}")
    # Written aside and renamed: a ``final/`` that exists is whole (``build_base`` resumes on it).
    final, staging = out / "final", out / "final.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_path, staging)
    model.save_pretrained(staging)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final
