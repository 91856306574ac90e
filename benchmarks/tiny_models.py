"""Size and speed of the tiny checkpoints: parameters, build time, forward+backward time.

python benchmarks/tiny_models.py [--family qwen2_5_vl] [--batch 8] [--image 224]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from PIL import Image

from vlm_r1.models import family_names, load_model
from vlm_r1.models.tiny import build_tiny


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=family_names(), default="qwen2_5_vl")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image", type=int, default=224)
    args = parser.parse_args()
    for size in ("test", "demo"):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            build_tiny(args.family, folder, size, seed=0)
            built = time.perf_counter() - start
            adapter, model, processor = load_model(folder)
        images = [
            [Image.new("RGB", (args.image, args.image), (30 * i % 255, 100, 50))]
            for i in range(args.batch)
        ]
        batch = adapter.prepare_inputs(
            processor, images, ["the red circle left of the blue square"] * args.batch
        )
        model.train()
        timings = []
        for _ in range(4):
            start = time.perf_counter()
            model(**batch, labels=batch["input_ids"]).loss.backward()
            timings.append(time.perf_counter() - start)
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{args.family} {size}: {params / 1e6:.2f}M params, built in {built:.2f} s, "
            f"batch {args.batch} x {batch['input_ids'].shape[1]} tokens at {args.image}px: "
            f"forward+backward {1000 * min(timings[1:]):.0f} ms"
        )


if __name__ == "__main__":
    main()
