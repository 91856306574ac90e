"""scripts/feature_probe.py: the linear read-out separates what is separable and stays at chance
on noise, and the object tokens are taken from the cell under each object's centre."""

from __future__ import annotations

import json

import pytest
import torch
from scripts_import import load_script

from vlm_r1.data.shapes import write_shapes


@pytest.fixture(scope="module")
def probe():
    return load_script("feature_probe")


def test_readout_reads_a_separable_label_and_not_noise(probe):
    generator = torch.Generator().manual_seed(0)
    labels = [str(i % 6) for i in range(600)]
    codes = torch.randn(6, 16, generator=generator) * 3
    separable = codes[[int(label) for label in labels]] + torch.randn(600, 16, generator=generator)
    assert probe.linear_readout(separable, labels) == 1.0
    noise = torch.randn(600, 16, generator=generator)
    assert probe.linear_readout(noise, labels) < 0.35  # chance 1/6; 120 held-out rows


def test_object_tokens_come_from_the_cell_under_each_centre(probe, tiny_path, tmp_path):
    files = write_shapes(tmp_path, 4, 0, 0, "112", ["rec_mix"], 2.0)
    data = files["rec_mix_train"]
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    checkpoint = str(tiny_path("qwen3_vl"))
    tokens, colours, shapes = probe.object_tokens(checkpoint, data, limit=3)
    objects = [obj for row in rows[:3] for obj in row["objects"]]
    assert colours == [obj[1] for obj in objects] and shapes == [obj[0] for obj in objects]

    # Independently: the merged token grid of the first scene, indexed by hand.
    from vlm_r1.data.jsonl import read_samples
    from vlm_r1.models import load_model
    from vlm_r1.policy.prompts import prepare_prompt

    adapter, model, processor = load_model(checkpoint)
    prompt = prepare_prompt(adapter, processor, next(iter(read_samples(str(data)))))
    features = prompt.features
    with torch.no_grad():
        pooled = model.get_image_features(
            pixel_values=features["pixel_values"], image_grid_thw=features["image_grid_thw"]
        ).pooler_output[0]
    _, height, width = features["image_grid_thw"][0].tolist()
    rows_, cols = height // 2, width // 2  # Qwen3-VL merges 2x2 patches
    for k, (_s, _c, _z, (x1, y1, x2, y2)) in enumerate(rows[0]["objects"]):
        r = int((y1 + y2) / 2 / rows[0]["height"] * rows_)
        c = int((x1 + x2) / 2 / rows[0]["width"] * cols)
        torch.testing.assert_close(tokens[k], pooled[r * cols + c].float())
