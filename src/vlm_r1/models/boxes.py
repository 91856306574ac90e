"""Box coordinate systems and conversions (pure: stdlib + numpy only).

Ground truth in vlm-r1 is always stored in *original-image pixels* as ``[x1, y1, x2, y2]``
(continuous coordinates, x2/y2 exclusive edges). Each model family reads and writes boxes in its
own system, and mixing them up is the most common reason a VLM-R1 user sees "format reward 1,
IoU reward 0". The systems:

``abs_resized``
    Absolute pixels of the image *as the model saw it* after the processor resized it
    (Qwen2.5-VL: ``smart_resize`` to multiples of ``patch_size * merge_size`` = 28).
    ``model = orig * (resized / original)`` per axis.
``norm1000``
    0-1000 normalised to the image size (Qwen2-VL, Qwen3-VL, InternVL2.5/3).
    ``model = orig / size * 1000`` per axis.
``norm1``
    0-1 normalised floats.

Conversions are affine per axis, so the round trip is exact in floating point; model outputs
are integers in practice, so rounding costs at most half a model unit (see ``round_trip_error``).
Points ``[x, y]`` (click answers) map exactly as a box's corner does (``points_to_model``,
``points_from_model``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

CoordinateSystem = Literal["abs_resized", "norm1000", "norm1"]
COORDINATE_SYSTEMS: tuple[str, ...] = ("abs_resized", "norm1000", "norm1")


@dataclass(frozen=True)
class BoxSpace:
    """How one image's boxes are expressed for one model.

    ``original_size`` and ``model_size`` are ``(width, height)``. ``model_size`` is the size the
    processor resized the image to; only ``abs_resized`` uses it.
    """

    system: CoordinateSystem
    original_size: tuple[int, int]
    model_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.system not in COORDINATE_SYSTEMS:
            raise ValueError(
                f"unknown coordinate system {self.system!r}; choose one of {COORDINATE_SYSTEMS}"
            )
        w, h = self.original_size
        if w <= 0 or h <= 0:
            raise ValueError(f"original_size must be positive, got {self.original_size}")
        if self.system == "abs_resized" and self.model_size is None:
            raise ValueError("abs_resized needs model_size (the resized input width, height)")

    def scale(self) -> tuple[float, float]:
        """Model units per original pixel, per axis (x, y)."""
        w, h = self.original_size
        if self.system == "abs_resized":
            mw, mh = self.model_size  # type: ignore[misc]
            return mw / w, mh / h
        if self.system == "norm1000":
            return 1000.0 / w, 1000.0 / h
        return 1.0 / w, 1.0 / h

    def extent(self) -> tuple[float, float]:
        """The largest valid coordinate per axis in model units (the image's far edges)."""
        sx, sy = self.scale()
        w, h = self.original_size
        return w * sx, h * sy


def _as_rows(values: Sequence[Sequence[float]] | np.ndarray, width: int, what: str) -> np.ndarray:
    """``values`` as float ``[N, width]`` (a flat sequence is read row by row); else an error
    naming ``what`` (boxes, points) and the shape it got."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, width) if arr.size else arr.reshape(0, width)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{what} must have shape [N, {width}], got {arr.shape}")
    return arr


def _as_boxes(boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    return _as_rows(boxes, 4, "boxes")


def clamp_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clamp ``[N, 4]`` xyxy boxes into ``[0, width] x [0, height]`` (orientation untouched)."""
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0.0, float(width))
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0.0, float(height))
    return out


def to_model(boxes: Sequence[Sequence[float]] | np.ndarray, space: BoxSpace) -> np.ndarray:
    """Original-image pixels -> the model's coordinate system. Returns float ``[N, 4]``."""
    arr = _as_boxes(boxes)
    sx, sy = space.scale()
    return arr * np.array([sx, sy, sx, sy])


def from_model(
    boxes: Sequence[Sequence[float]] | np.ndarray, space: BoxSpace, clamp: bool = True
) -> np.ndarray:
    """The model's coordinate system -> original-image pixels, clamped to the image by default.

    Non-finite coordinates become 0 so that downstream IoU math stays finite.
    """
    arr = _as_boxes(boxes)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    sx, sy = space.scale()
    out = arr / np.array([sx, sy, sx, sy])
    if clamp:
        w, h = space.original_size
        out = clamp_boxes(out, w, h)
    return out


def _as_points(points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    return _as_rows(points, 2, "points")


def points_to_model(points: Sequence[Sequence[float]] | np.ndarray, space: BoxSpace) -> np.ndarray:
    """Original-image pixels ``[N, 2]`` (x, y) -> the model's coordinate system.

    A point is mapped as a box's corner is (the same ``to_model``), so a point and a box a model
    writes for the same image always agree."""
    arr = _as_points(points)
    return to_model(np.hstack([arr, arr]), space)[:, :2]


def points_from_model(
    points: Sequence[Sequence[float]] | np.ndarray, space: BoxSpace, clamp: bool = True
) -> np.ndarray:
    """The model's coordinate system -> original-image pixels ``[N, 2]``, as ``from_model``
    maps a box's corner (non-finite coordinates become 0; clamped to the image by default).

    Scoring a click passes ``clamp=False``: a point written outside the image must not be pulled
    onto an edge, where it could land inside a box that touches that edge."""
    arr = _as_points(points)
    return from_model(np.hstack([arr, arr]), space, clamp)[:, :2]


def round_boxes(boxes: np.ndarray, space: BoxSpace) -> np.ndarray:
    """Round model-space boxes (or points) the way a model writes them: integers, except
    ``norm1`` (3 d.p.)."""
    if space.system == "norm1":
        return np.round(boxes, 3)
    return np.round(boxes)


def as_written(values: Sequence[float] | np.ndarray) -> list[int | float]:
    """Rounded model coordinates as JSON numbers: integers where the system's rounding made
    whole numbers (pixels, 0-1000), floats otherwise (0-1 keeps its decimals)."""
    return [int(v) if float(v).is_integer() else float(v) for v in np.asarray(values).ravel()]


def round_trip_error(space: BoxSpace) -> float:
    """Worst-case original-pixel error of original -> rounded model units -> original."""
    sx, sy = space.scale()
    unit = 0.001 if space.system == "norm1" else 1.0
    return 0.5 * unit / min(sx, sy)


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
) -> tuple[int, int]:
    """Qwen2-VL/2.5-VL/3-VL input size: both sides multiples of ``factor``, area within bounds.

    Formula from the Qwen2-VL image processor (transformers ``smart_resize``): round each side to
    the nearest multiple of ``factor``, then rescale by sqrt of the area excess/deficit, flooring
    (too large) or ceiling (too small) to multiples of ``factor``. Returns ``(height, width)``.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar
