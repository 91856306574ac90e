"""The report's curve smoothing: TensorBoard's debiased exponential moving average."""

import math

import numpy as np
import pytest

from vlm_r1.report.plots import ema, smoothing_weight


def weighted_mean_reference(values, weight):
    """The same average from its closed form, not the recursion: at the k-th finite value, the
    mean of the finite values so far with weights weight**(age), age 0 for the newest."""
    out, seen = [], []
    for value in values:
        if not math.isfinite(value):
            out.append(math.nan)
            continue
        seen.append(value)
        ages = np.arange(len(seen))[::-1]
        w = weight ** ages.astype(float)
        out.append(float((w * np.array(seen)).sum() / w.sum()))
    return out


def test_hand_computed():
    # weight 0.5: averages 0.5, 1.25, 2.125 over debias factors 0.5, 0.75, 0.875.
    assert ema([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 5 / 3, 17 / 7])


def test_undefined_points_stay_undefined_and_do_not_move_the_average():
    out = ema([1.0, math.nan, 3.0, math.inf], 0.5)
    assert out[0] == 1.0 and math.isnan(out[1]) and math.isnan(out[3])
    assert out[2] == pytest.approx(1.75 / 0.75)  # as if the NaN were not there


def test_matches_the_closed_form_on_noisy_data():
    rng = np.random.default_rng(0)
    values = list(rng.normal(0, 1, 200))
    values[17] = values[90] = math.nan
    for weight in (0.0, 0.3, 0.6, 0.9, 0.99):
        got, want = ema(values, weight), weighted_mean_reference(values, weight)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_debiased_start_and_constant_curves():
    # Without debiasing the first value would be (1 - 0.9) * 5 = 0.5, far below the data.
    assert ema([5.0] * 10, 0.9) == pytest.approx([5.0] * 10)
    assert ema([4.0, -2.0, 7.0], 0.0) == [4.0, -2.0, 7.0]
    assert ema([], 0.6) == []


@pytest.mark.parametrize("weight", [-0.1, 1.0, 1.5, math.nan])
def test_rejects_weights_outside_zero_to_one(weight):
    with pytest.raises(ValueError, match="smoothing weight"):
        ema([1.0], weight)


def test_weight_grows_with_the_curve_between_bounds():
    assert smoothing_weight(24) == pytest.approx(0.6)  # a demo-length run: TensorBoard's default
    assert smoothing_weight(200) == pytest.approx(0.9)  # window of 10 points
    assert smoothing_weight(10**6) == pytest.approx(0.98)
    assert smoothing_weight(0) == pytest.approx(0.6)
