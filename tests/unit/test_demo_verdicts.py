"""The demo only calls a model better when the paired test says so."""

from vlm_r1.demo import PAIRS, _verdicts
from vlm_r1.eval.compare import compare_hits


def comparisons(hits: dict[str, list[bool]]) -> dict:
    tests = {}
    for pair in PAIRS:
        for b, a in (pair, pair[::-1]):
            tests[f"{b}_vs_{a}"] = compare_hits(hits[a], hits[b]).as_dict()
    return {"eval_in": tests, "eval_ood": tests}


def results(hits: dict[str, list[bool]]) -> dict:
    return {
        m: {s: {"rec": {"acc@0.5": sum(h) / len(h), "miou": 0.0}} for s in ("eval_in", "eval_ood")}
        for m, h in hits.items()
    }


def test_significant_gain_is_stated_and_noise_is_not():
    n = 40
    hits = {
        "start": [False] * n,
        "sft": [True] * 12 + [False] * (n - 12),  # 12 discordant wins: p = 2^-12
        "grpo": [True] * 2 + [False] * (n - 2),  # 2 wins: p = 0.25, not evidence
    }
    in_domain = _verdicts(results(hits), comparisons(hits))[0]
    assert "SFT > start (12 vs 0 samples" in in_domain
    assert "GRPO ~ start (2 vs 0 samples, not significant)" in in_domain
    assert "SFT > GRPO (10 vs 0 samples" in in_domain


def test_a_worse_model_is_named_as_worse():
    n = 40
    hits = {
        "start": [True] * 10 + [False] * 30,
        "sft": [False] * n,
        "grpo": [True] * 10 + [False] * 30,
    }
    in_domain = _verdicts(results(hits), comparisons(hits))[0]
    assert "start > SFT (10 vs 0 samples" in in_domain
    assert "GRPO ~ start (0 vs 0 samples, not significant)" in in_domain
