import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm_r1.models import boxes as bx


@st.composite
def image_and_boxes(draw, max_side=4000):
    w = draw(st.integers(1, max_side))
    h = draw(st.integers(1, max_side))
    n = draw(st.integers(0, 6))
    coords = []
    for _ in range(n):
        x1, x2 = sorted(draw(st.floats(0, w, allow_nan=False)) for _ in range(2))
        y1, y2 = sorted(draw(st.floats(0, h, allow_nan=False)) for _ in range(2))
        coords.append([x1, y1, x2, y2])
    return w, h, np.array(coords, dtype=float).reshape(-1, 4)


def spaces_for(w, h):
    rh, rw = bx.smart_resize(h, w) if max(w, h) / min(w, h) <= 200 else (28, 28)
    return [
        bx.BoxSpace("abs_resized", (w, h), (rw, rh)),
        bx.BoxSpace("norm1000", (w, h)),
        bx.BoxSpace("norm1", (w, h)),
    ]


@settings(max_examples=300, deadline=None)
@given(image_and_boxes())
def test_float_round_trip_is_exact(data):
    w, h, boxes = data
    for space in spaces_for(w, h):
        back = bx.from_model(bx.to_model(boxes, space), space)
        np.testing.assert_allclose(back, boxes, atol=1e-6 * max(w, h))


@settings(max_examples=300, deadline=None)
@given(image_and_boxes(max_side=2000))
def test_rounded_round_trip_within_one_pixel(data):
    """Models write integers (norm1: 3 decimals); up to 2000 px that costs < 1 original pixel."""
    w, h, boxes = data
    for space in spaces_for(w, h):
        written = bx.round_boxes(bx.to_model(boxes, space), space)
        back = bx.from_model(written, space)
        assert np.all(np.abs(back - boxes) <= max(1.0, bx.round_trip_error(space)) + 1e-9)


def test_known_values():
    space = bx.BoxSpace("norm1000", (200, 100))
    np.testing.assert_allclose(bx.to_model([[10, 20, 100, 50]], space), [[50, 200, 500, 500]])
    space = bx.BoxSpace("abs_resized", (100, 50), (56, 28))
    np.testing.assert_allclose(bx.to_model([[50, 25, 100, 50]], space), [[28, 14, 56, 28]])


def test_from_model_clamps_and_neutralises_non_finite():
    space = bx.BoxSpace("norm1000", (100, 100))
    out = bx.from_model([[-50, 200, 1500, float("nan")]], space)
    np.testing.assert_allclose(out, [[0, 20, 100, 0]])


def test_bad_space_arguments():
    with pytest.raises(ValueError, match="unknown coordinate system"):
        bx.BoxSpace("pixels", (10, 10))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model_size"):
        bx.BoxSpace("abs_resized", (10, 10))
    with pytest.raises(ValueError, match="shape"):
        bx.to_model([[1, 2, 3]], bx.BoxSpace("norm1", (10, 10)))


@settings(max_examples=500, deadline=None)
@given(
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.sampled_from([28, 32]),
    st.integers(1, 50_000),
    st.integers(50_000, 2_000_000),
)
def test_smart_resize_matches_transformers(h, w, factor, min_pixels, max_pixels):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    try:
        expected = smart_resize(h, w, factor, min_pixels, max_pixels)
    except ValueError:
        with pytest.raises(ValueError):
            bx.smart_resize(h, w, factor, min_pixels, max_pixels)
        return
    assert bx.smart_resize(h, w, factor, min_pixels, max_pixels) == tuple(expected)
