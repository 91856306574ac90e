"""Can an object's colour and shape be read from the image tokens a Qwen-family checkpoint makes?

    .venv/bin/python scripts/feature_probe.py --data DIR/rec_mix_train.jsonl CHECKPOINT [...]

A REC answer can only name the right object if the image tokens say what each object is. This
script encodes shapes scenes with the checkpoint's own vision tower and merger, takes the image
token whose cell holds each object's centre, and fits a linear read-out (softmax regression,
80/20 split) from those tokens to the object's colour and to its shape. It prints held-out
accuracy per checkpoint; chance is 1/6 for each. Comparing a checkpoint with the random tower
it was trained from shows whether training kept or eroded the "what" in the tokens.

Qwen families only: the token grid is read from ``image_grid_thw`` and the merge size.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from vlm_r1.data.jsonl import read_samples
from vlm_r1.models import load_model
from vlm_r1.policy.image_features import SharedImageFeatures
from vlm_r1.policy.prompts import prepare_prompt


@torch.no_grad()
def object_tokens(checkpoint: str, data: Path, limit: int) -> tuple[torch.Tensor, list, list]:
    """The image token under each object's centre, with the object's colour and shape."""
    adapter, model, processor = load_model(checkpoint)
    model.eval()
    merge = processor.image_processor.merge_size
    tokens, colours, shapes = [], [], []
    for sample in itertools.islice(read_samples(str(data)), limit):
        row = sample.meta  # the scene as ``shapes`` wrote it: objects, width, height
        prompt = prepare_prompt(adapter, processor, sample)
        image = SharedImageFeatures.encode(model, [prompt]).per_prompt[0].pooler[0]
        _, height, width = prompt.features["image_grid_thw"][0].tolist()
        grid = image.reshape(height // merge, width // merge, -1)
        for shape, colour, _size, (x1, y1, x2, y2) in row["objects"]:
            cy = (y1 + y2) / 2 / row["height"]
            cx = (x1 + x2) / 2 / row["width"]
            tokens.append(grid[int(cy * grid.shape[0]), int(cx * grid.shape[1])].float())
            colours.append(colour)
            shapes.append(shape)
    return torch.stack(tokens), colours, shapes


def linear_readout(features: torch.Tensor, labels: list, steps: int = 500) -> float:
    """Held-out accuracy of a softmax regression on standardised features (last 20% held out)."""
    names = sorted(set(labels))
    target = torch.tensor([names.index(label) for label in labels])
    cut = len(labels) * 4 // 5
    mean, std = features[:cut].mean(0), features[:cut].std(0) + 1e-6
    x = (features - mean) / std
    torch.manual_seed(0)
    readout = torch.nn.Linear(x.shape[1], len(names))
    optimizer = torch.optim.Adam(readout.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(readout(x[:cut]), target[:cut]).backward()
        optimizer.step()
    with torch.no_grad():
        return (readout(x[cut:]).argmax(1) == target[cut:]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", type=Path, required=True, help="a shapes JSONL with objects")
    parser.add_argument("--limit", type=int, default=1500, help="scenes to encode")
    args = parser.parse_args()
    for checkpoint in args.checkpoints:
        features, colours, shapes = object_tokens(checkpoint, args.data, args.limit)
        print(
            f"{checkpoint}: {len(colours)} objects  colour {linear_readout(features, colours):.3f}"
            f"  shape {linear_readout(features, shapes):.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
