"""Paired comparison of two eval runs (McNemar's exact test) against independent oracles."""

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlm_r1.eval.compare import (
    binomial_upper_tail,
    compare_hits,
    compare_predictions,
)


def brute_force_tail(successes: int, trials: int) -> float:
    """Enumerate every outcome of ``trials`` fair coins (independent of the closed form)."""
    outcomes = list(itertools.product((0, 1), repeat=trials))
    return sum(sum(o) >= successes for o in outcomes) / len(outcomes)


@given(st.integers(0, 12).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_tail_matches_enumeration(case):
    successes, trials = case
    assert binomial_upper_tail(successes, trials) == pytest.approx(
        brute_force_tail(successes, trials)
    )


def test_hand_computed_tails():
    assert binomial_upper_tail(5, 5) == 1 / 32
    assert binomial_upper_tail(0, 0) == 1.0
    assert binomial_upper_tail(4, 5) == 6 / 32
    with pytest.raises(ValueError):
        binomial_upper_tail(3, 2)


def test_only_discordant_pairs_count():
    # 3 samples both right, 2 both wrong, B alone right on 5, A alone right on 0.
    a = [True] * 3 + [False] * 2 + [False] * 5
    b = [True] * 3 + [False] * 2 + [True] * 5
    result = compare_hits(a, b)
    assert (result.b_only, result.a_only, result.n) == (5, 0, 10)
    assert result.accuracy_a == 0.3 and result.accuracy_b == 0.8
    assert result.p_value == 1 / 32 and result.b_is_better
    # The same comparison the other way round is not evidence for A.
    reverse = compare_hits(b, a)
    assert reverse.p_value == 1.0 and not reverse.b_is_better


def test_a_tie_is_not_an_improvement():
    result = compare_hits([True, False] * 20, [False, True] * 20)
    assert result.accuracy_a == result.accuracy_b and not result.b_is_better


def test_predictions_are_paired_by_sample_id(tmp_path):
    def write(name, ious):
        path = tmp_path / name
        rows = [{"id": f"s{i}", "iou": iou} for i, iou in ious.items()]
        rows.append({"id": "unscored", "iou": None})
        path.write_text("\n".join(json.dumps(r) for r in rows))
        return path

    a = write("a.jsonl", {0: 0.1, 1: 0.6, 2: 0.2, 3: 0.0})
    b = write("b.jsonl", {3: 0.5, 2: 0.9, 1: 0.7, 9: 1.0})  # other order, s9 only here
    result = compare_predictions(a, b)
    assert result.n == 3  # s1, s2, s3
    assert (result.b_only, result.a_only) == (2, 0)  # IoU 0.5 is a hit (>= 0.5)
    with pytest.raises(ValueError, match="share no scored sample"):
        compare_predictions(a, write("c.jsonl", {7: 0.9}))


def test_unpaired_lengths_are_refused():
    with pytest.raises(ValueError, match="paired samples"):
        compare_hits([True], [True, False])
