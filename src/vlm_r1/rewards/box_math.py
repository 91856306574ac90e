"""IoU of axis-aligned boxes, vectorised (pure: numpy only).

Boxes are ``[x1, y1, x2, y2]``. An inverted box (x2 < x1 or y2 < y1) has zero area and zero
overlap: it is not silently re-ordered, so a model cannot be rewarded for a malformed box.

``inclusive=True`` is the VLM-R1 evaluation-script convention: pixel indices are inclusive, so
widths and heights are ``x2 - x1 + 1``. The default is continuous coordinates (COCO's).
"""

from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray, inclusive: bool = False) -> np.ndarray:
    """IoU between every box of ``a`` ``[N, 4]`` and every box of ``b`` ``[M, 4]`` -> ``[N, M]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if inclusive else 0.0
    # An inverted box overlaps nothing, even with +1 widths.
    a_ok = (a[:, 2] >= a[:, 0]) & (a[:, 3] >= a[:, 1])
    b_ok = (b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None) * (a_ok[:, None] & b_ok[None, :])
    union = _areas(a, one)[:, None] + _areas(b, one)[None, :] - inter  # [N, M]
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _areas(x: np.ndarray, one: float) -> np.ndarray:
    return np.clip(x[:, 2] - x[:, 0] + one, 0.0, None) * np.clip(x[:, 3] - x[:, 1] + one, 0.0, None)


def paired_iou(a: np.ndarray, b: np.ndarray, inclusive: bool = False) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]`` for two ``[N, 4]`` arrays -> ``[N]`` (no N x N matrix)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if inclusive else 0.0
    ok = (a[:, 2] >= a[:, 0]) & (a[:, 3] >= a[:, 1]) & (b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + one, 0.0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + one, 0.0, None)
    inter = iw * ih * ok
    union = _areas(a, one) + _areas(b, one) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
