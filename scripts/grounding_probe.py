"""Can the demo-size model tell two images apart by where one object is? A 1-minute diagnostic.

    .venv/bin/python scripts/grounding_probe.py --object-scale 1   # default shapes: stays at 50/50
    .venv/bin/python scripts/grounding_probe.py --object-scale 2.5 # big objects: separates
    .venv/bin/python scripts/grounding_probe.py --black-white      # control: whole-image change

Two shapes images, one with its object in the left third and one in the right third, are
trained (full fine-tuning, AdamW) to answer "left" / "right". The script prints the probability
of the right first answer token for each image. Chance is 0.5 for both; memorising two images
means both go to ~1. It isolates the image -> answer pathway from everything else in the demo.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models import load_model
from vlm_r1.models.tiny import tiny_checkpoint
from vlm_r1.policy.logprobs import completion_logprobs
from vlm_r1.policy.prompts import prepare_prompt

QUESTION = "Is the shape in the left or right half?"


def pick_images(folder: Path, size: int, object_scale: float, black_white: bool):
    files = write_shapes(folder, 60, 0, 0, str(size), ["locate"], object_scale)
    samples = list(read_samples(str(files["locate_train"])))
    rows = [json.loads(line) for line in files["locate_train"].read_text().splitlines()]
    centre = [(r["objects"][0][3][0] + r["objects"][0][3][2]) / 2 for r in rows]
    left = next(s for s, c in zip(samples, centre, strict=True) if c < size / 3)
    right = next(s for s, c in zip(samples, centre, strict=True) if c > 2 * size / 3)
    if black_white:
        for name, colour in (("black", 0), ("white", 255)):
            Image.new("RGB", (size, size), (colour,) * 3).save(folder / f"{name}.png")
        left = replace(left, images=(str(folder / "black.png"),))
        right = replace(right, images=(str(folder / "white.png"),))
    return [
        (replace(left, question=QUESTION), "left"),
        (replace(right, question=QUESTION), "right"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="qwen2_5_vl")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--object-scale", type=float, default=1.0)
    parser.add_argument("--black-white", action="store_true")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()

    torch.manual_seed(0)
    adapter, model, processor = load_model(str(tiny_checkpoint(args.family, "demo", 0)))
    tok = processor.tokenizer
    with tempfile.TemporaryDirectory() as folder:
        pairs = pick_images(Path(folder), args.image_size, args.object_scale, args.black_white)
        prompts = [prepare_prompt(adapter, processor, sample) for sample, _ in pairs]
    targets = [tok(t + adapter.eos_token, add_special_tokens=False)["input_ids"] for _, t in pairs]
    width = max(map(len, targets))
    ids = torch.full((2, width), tok.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    for row, target in enumerate(targets):
        ids[row, : len(target)] = torch.tensor(target)
        mask[row, : len(target)] = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    for step in range(args.steps + 1):
        logps = completion_logprobs(model, prompts, ids, mask, tok.pad_token_id)
        loss = -(logps * mask).sum() / mask.sum()
        if step % 30 == 0:
            p_left, p_right = logps[:, 0].exp().tolist()
            print(
                f"step {step:4d}  loss {loss.item():.3f}  p(left|left image) {p_left:.3f}  "
                f"p(right|right image) {p_right:.3f}",
                flush=True,
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
