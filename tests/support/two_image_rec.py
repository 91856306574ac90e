"""Two-image REC rows for tests: the red square is in one of two images of different sizes.

Each row's images differ in size and aspect, so a box written in one image's coordinate system
and read in the other's lands elsewhere (for every family: 0-1000 scales with the image, and
Qwen2.5-VL's resized pixels do too, since both images are larger than the tiny processor's
pixel budget). The answer names the image: ``[{"bbox_2d": [...], "image": k}]``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

SIZES = ((224, 168), (140, 280), (196, 196), (168, 252))


def write_two_image_rec(folder: Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` rows (and their PNGs) under ``folder``; returns the JSONL path."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        sizes = rng.sample(SIZES, 2)
        target = rng.choice([1, 2])
        names, box = [], None
        for number, (w, h) in enumerate(sizes, start=1):
            image = Image.new("RGB", (w, h), (200, 200, 200))
            draw = ImageDraw.Draw(image)
            side = rng.randint(24, 48)
            x, y = rng.randint(0, w - side), rng.randint(0, h - side)
            colour = (220, 20, 20) if number == target else (20, 20, 220)
            draw.rectangle([x, y, x + side - 1, y + side - 1], fill=colour)
            if number == target:
                box = [x, y, x + side, y + side]
            name = f"row{i}_img{number}.png"
            image.save(folder / name)
            names.append(name)
        answer = json.dumps([{"bbox_2d": box, "image": target}])
        rows.append(
            {
                "id": f"two-{i}",
                "image": names,
                "conversations": [
                    {"from": "human", "value": "<image><image>Find the red square."},
                    {"from": "gpt", "value": answer},
                ],
                "task": "rec",
            }
        )
    path = folder / "two_image_rec.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
