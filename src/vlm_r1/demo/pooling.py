"""Several seeds into one result: mean and spread per model and split, and one paired test.

Each seed draws its own post-training data *and its own eval samples*, so the samples of
different seeds are independent matched pairs: summing the discordant counts of the seeds'
McNemar tests gives a valid exact test over all of them (the matched pairs do not need to come
from one draw; McNemar 1947, and the Mantel-Haenszel view of stratified matched pairs). Summing
over seeds that share their eval samples would count each sample several times, so the demo
never does that.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from vlm_r1.eval.compare import ALPHA, binomial_upper_tail


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max; NaNs are left out."""
    finite = [float(v) for v in values if not math.isnan(float(v))]
    if not finite:
        nan = float("nan")
        return {"mean": nan, "sd": nan, "min": nan, "max": nan, "n": 0}
    return {
        "mean": statistics.fmean(finite),
        "sd": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "min": min(finite),
        "max": max(finite),
        "n": len(finite),
    }


def pooled_test(tests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One exact one-sided McNemar test over the seeds' paired samples: is B better than A?

    ``tests`` are the seeds' ``PairedComparison.as_dict()`` for the same ``b_vs_a``."""
    b_only = sum(int(t["b_only"]) for t in tests)
    a_only = sum(int(t["a_only"]) for t in tests)
    p_value = binomial_upper_tail(b_only, b_only + a_only)
    return {
        "n": sum(int(t["n"]) for t in tests),
        "seeds": len(tests),
        "b_only": b_only,
        "a_only": a_only,
        "p_value": p_value,
        "b_is_better": p_value < ALPHA and b_only > a_only,
        "seeds_b_better": sum(bool(t["b_is_better"]) for t in tests),
    }


def pool_seeds(per_seed: Sequence[Mapping[str, Any]], metric_path: Sequence[str]) -> dict:
    """``{model: {split: spread}}`` of one metric over the seeds' results.

    ``per_seed[i]`` is ``{model: {split: {...}}}``; ``metric_path`` walks into a split's dict,
    e.g. ``("rec", "acc@0.5")``."""
    models = [m for m in per_seed[0] if all(m in seed for seed in per_seed)]
    pooled: dict[str, dict[str, dict[str, float]]] = {}
    for model in models:
        pooled[model] = {}
        for split in per_seed[0][model]:
            values = []
            for seed in per_seed:
                value: Any = seed[model].get(split, {})
                for key in metric_path:
                    value = value.get(key, {}) if isinstance(value, Mapping) else {}
                values.append(float(value) if isinstance(value, (int, float)) else float("nan"))
            pooled[model][split] = spread(values)
    return pooled


def pool_comparisons(per_seed: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict:
    """``{split: {"b_vs_a": pooled_test}}`` from the seeds' ``{split: {"b_vs_a": test}}``."""
    return {
        split: {
            name: pooled_test([seed[split][name] for seed in per_seed])
            for name in per_seed[0][split]
        }
        for split in per_seed[0]
    }
