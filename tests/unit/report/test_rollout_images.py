"""Rollout images: enlarged by whole factors without blur, boxes drawn at the enlarged size."""

import numpy as np
import pytest
from PIL import Image

from vlm_r1.rollout_images import MIN_ROLLOUT_WIDTH, draw_rollout, upscale_factor, upscale_nearest

GREEN, RED = (0, 170, 0), (220, 0, 0)


def blocks(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel as a factor x factor block: what nearest-neighbour enlarging must give."""
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


@pytest.mark.parametrize(
    ("width", "factor"), [(112, 3), (128, 2), (255, 2), (256, 1), (1000, 1), (1, 256), (86, 3)]
)
def test_smallest_whole_factor_reaching_the_minimum(width, factor):
    assert upscale_factor(width) == factor
    assert width * factor >= MIN_ROLLOUT_WIDTH and (factor == 1 or width * factor < 512)


def test_upscale_is_a_block_copy(synthetic, tmp_path):
    pixels = synthetic.write_image(tmp_path / "a.png", size=(112, 80))
    with Image.open(tmp_path / "a.png") as image:
        big, factor = upscale_nearest(image.convert("RGB"))
    assert factor == 3 and big.size == (336, 240)
    np.testing.assert_array_equal(np.asarray(big), blocks(pixels, 3))
    large = Image.new("RGB", (300, 20))
    assert upscale_nearest(large) == (large, 1)


def test_rollout_without_boxes_is_the_image_enlarged(synthetic, tmp_path):
    pixels = synthetic.write_image(tmp_path / "a.png")
    row = {**synthetic.rollout_row(tmp_path / "a.png"), "solution": "", "completion": "no box"}
    out = draw_rollout(row)
    assert out.width >= 256
    np.testing.assert_array_equal(np.asarray(out), blocks(pixels, 3))


def _near_edge(y, x, box, reach=2):
    x1, y1, x2, y2 = box
    inside = x1 - reach <= x <= x2 + reach and y1 - reach <= y <= y2 + reach
    return inside and (
        min(abs(x - x1), abs(x - x2)) <= reach or min(abs(y - y1), abs(y - y2)) <= reach
    )


def test_boxes_are_drawn_at_the_enlarged_size(synthetic, tmp_path):
    pixels = synthetic.write_image(tmp_path / "a.png")
    row = synthetic.rollout_row(tmp_path / "a.png")  # truth [10, 20, 40, 50] px of 112
    out = np.asarray(draw_rollout(row))
    truth = (30, 60, 120, 150)  # x 3
    # [100, 200, 500, 600] in norm1000 -> 11.2, 22.4, 56, 67.2 px -> x 3
    predicted = (33.6, 67.2, 168.0, 201.6)
    assert tuple(out[100, 30]) == GREEN and tuple(out[60, 75]) == GREEN  # left, top edges
    assert tuple(out[150, 168]) == RED and tuple(out[201, 100]) == RED  # right, bottom edges
    assert tuple(out[150, 56]) != RED  # not at the source-size position
    # Every other pixel is the source pixel's block: lines 2 px wide, nothing blurred.
    changed = np.argwhere((out != blocks(pixels, 3)).any(axis=-1))
    assert len(changed) > 0
    assert all(_near_edge(y, x, truth) or _near_edge(y, x, predicted) for y, x in changed)
