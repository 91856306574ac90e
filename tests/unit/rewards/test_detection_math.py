import numpy as np
import pytest
from coco_oracle import pycocotools_ap, random_case

from vlm_r1.rewards.detection_math import Detections, coco_ap


def _ours(case):
    pb, pl, ps, gb, gl = case
    return coco_ap([Detections(pb, pl, ps, gb, gl)])[0]


def test_agrees_with_pycocotools_on_2000_random_cases():
    rng = np.random.default_rng(1234)
    cases = [random_case(rng) for _ in range(2000)]
    ours = coco_ap([Detections(*c) for c in cases])  # one vectorised call
    compared = 0
    for case, row in zip(cases, ours, strict=True):
        expected = pycocotools_ap(*case)
        if expected is None:
            assert np.isnan(row).all()
            continue
        assert abs(row.mean() - expected[0]) <= 1e-6, case
        assert abs(row[0] - expected[1]) <= 1e-6, case
        compared += 1
    assert compared > 1500


def test_batched_equals_one_by_one():
    rng = np.random.default_rng(7)
    cases = [random_case(rng) for _ in range(200)]
    batched = coco_ap([Detections(*c) for c in cases])
    single = np.array([_ours(c) for c in cases])
    np.testing.assert_array_equal(np.isnan(batched), np.isnan(single))
    np.testing.assert_allclose(np.nan_to_num(batched), np.nan_to_num(single), atol=1e-12)


def test_hand_computed_cases():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    # Perfect: AP 1 at every threshold.
    assert _ours((gt, ["a", "a"], np.ones(2), gt, ["a", "a"])) == pytest.approx(np.ones(10))
    # One of two found: precision 1 up to recall 0.5 -> 51 of 101 recall points.
    assert _ours((gt[:1], ["a"], np.ones(1), gt, ["a", "a"])) == pytest.approx(
        np.full(10, 51 / 101)
    )
    # A false positive ranked first, then the hit: precision 1/2 at recall 1 for one gt.
    got = _ours(
        (np.array([[50, 50, 60, 60], [0, 0, 10, 10]], float), ["a", "a"], np.ones(2), gt[:1], ["a"])
    )
    assert got == pytest.approx(np.full(10, 0.5))
    # Duplicates of the right box: recall hits 1 at the first, extra ones come later -> AP 1.
    dup = np.repeat(gt[:1], 50, axis=0)
    assert _ours((dup, ["a"] * 50, np.ones(50), gt[:1], ["a"])) == pytest.approx(np.ones(10))


def test_empty_cases_are_explicit():
    gt = np.array([[0, 0, 10, 10]], float)
    none = np.zeros((0, 4))
    assert np.isnan(_ours((none, [], np.zeros(0), none, []))).all()  # COCO undefined
    assert _ours((none, [], np.zeros(0), gt, ["a"])) == pytest.approx(np.zeros(10))
    assert _ours((gt, ["b"], np.ones(1), gt, ["a"])) == pytest.approx(np.zeros(10))
