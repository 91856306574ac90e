"""What the demo measured, in plain sentences: a model is only called better than another when
a paired exact test on the same samples says so (p < 0.05, ``eval/compare.py``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Model pairs the demo compares; each is tested both ways ("is b better than a?").
PAIRS = (("sft", "base"), ("grpo", "base"), ("grpo", "sft"))
MODELS = ("base", "sft", "grpo")
NAMES = {"base": "base", "sft": "SFT", "grpo": "GRPO"}
SPLITS = (("eval_in", "in domain"), ("eval_ood", "out of domain"))


def rec_metric(results: Mapping[str, Any], model: str, split: str, metric: str) -> float:
    value = results.get(model, {}).get(split, {}).get("rec", {}).get(metric, float("nan"))
    return float(value)


def pair_verdict(tests: Mapping[str, Mapping[str, Any]], b: str, a: str) -> str:
    """``"SFT > base (31 vs 2 samples, p=1e-07)"``, or ``~`` when neither way is significant.
    A pooled test also says in how many seeds the difference was significant on its own."""
    for better, worse in ((b, a), (a, b)):
        test = tests[f"{better}_vs_{worse}"]
        if test["b_is_better"]:
            seeds = (
                f"; {test['seeds_b_better']}/{test['seeds']} seeds alone" if "seeds" in test else ""
            )
            return (
                f"{NAMES[better]} > {NAMES[worse]} ({test['b_only']} vs {test['a_only']} "
                f"samples, p={test['p_value']:.2g}{seeds})"
            )
    test = tests[f"{b}_vs_{a}"]
    return (
        f"{NAMES[b]} ~ {NAMES[a]} ({test['b_only']} vs {test['a_only']} samples, not significant)"
    )


def rec_verdicts(results: Mapping[str, Any], comparisons: Mapping[str, Any]) -> list[str]:
    """One line per split for one seed: Acc@0.5 and mean IoU of each model, then the tests."""
    lines = []
    for split, label in SPLITS:
        acc = {m: rec_metric(results, m, split, "acc@0.5") for m in MODELS}
        miou = {m: rec_metric(results, m, split, "miou") for m in MODELS}
        pairs = "; ".join(pair_verdict(comparisons[split], b, a) for b, a in PAIRS)
        lines.append(
            f"{label}: Acc@0.5 base {acc['base']:.3f} / SFT {acc['sft']:.3f} / "
            f"GRPO {acc['grpo']:.3f}; mean IoU {miou['base']:.3f} / {miou['sft']:.3f} / "
            f"{miou['grpo']:.3f}. {pairs}."
        )
    return lines


def _mean_sd(stats: Mapping[str, float]) -> str:
    if math.isnan(stats["mean"]):
        return "nan"
    return f"{stats['mean']:.3f}±{stats['sd']:.3f}"


def pooled_verdicts(pooled: Mapping[str, Any], tests: Mapping[str, Any], seeds: int) -> list[str]:
    """One line per split over all seeds: mean±sd Acc@0.5 per model and the pooled tests."""
    lines = []
    for split, label in SPLITS:
        acc = {m: _mean_sd(pooled[m][split]) for m in MODELS}
        pairs = "; ".join(pair_verdict(tests[split], b, a) for b, a in PAIRS)
        lines.append(
            f"{label}, {seeds} seeds pooled: Acc@0.5 base {acc['base']} / SFT {acc['sft']} / "
            f"GRPO {acc['grpo']}. {pairs}."
        )
    return lines


def detection_verdict(
    pooled: Mapping[str, Mapping[str, Mapping[str, float]]], start_map: float
) -> str:
    """mAP and the end-of-training hacking monitors of the AP and odLength runs, over seeds,
    after the mAP both started from (the detection base's)."""
    parts = []
    for name, label in (("grpo_ap", "AP reward"), ("grpo_odlength", "odLength")):
        stats = pooled[name]
        parts.append(
            f"{label}: mAP {_mean_sd(stats['mAP'])}, predicted/true boxes "
            f"{_mean_sd(stats['pred_gt_box_ratio'])}, duplicate rate "
            f"{_mean_sd(stats['duplicate_box_rate'])}, empty answers "
            f"{_mean_sd(stats['empty_answer_rate'])}, whole-image boxes "
            f"{_mean_sd(stats['whole_image_box_rate'])}, well-formed answers "
            f"{_mean_sd(stats['well_formed_answer_rate'])}"
        )
    seeds = int(pooled["grpo_ap"]["mAP"]["n"])
    return (
        f"detection ({seeds} seeds, end of training, from the detection base's mAP "
        f"{start_map:.3f}): " + "; ".join(parts) + "."
    )
