"""The demo only calls a model better when the paired test says so, per seed and pooled."""

import json
import math
import statistics

import pytest

from vlm_r1.demo.competence import accuracy_by_kind, competence, where_boxes_land
from vlm_r1.demo.pooling import pool_comparisons, pool_seeds, pooled_test, spread
from vlm_r1.demo.verdicts import PAIRS, detection_verdict, pooled_verdicts, rec_verdicts
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
        "base": [False] * n,
        "sft": [True] * 12 + [False] * (n - 12),  # 12 discordant wins: p = 2^-12
        "grpo": [True] * 2 + [False] * (n - 2),  # 2 wins: p = 0.25, not evidence
    }
    in_domain = rec_verdicts(results(hits), comparisons(hits))[0]
    assert "SFT > base (12 vs 0 samples" in in_domain
    assert "GRPO ~ base (2 vs 0 samples, not significant)" in in_domain
    assert "SFT > GRPO (10 vs 0 samples" in in_domain
    assert "Acc@0.5 base 0.000 / SFT 0.300 / GRPO 0.050" in in_domain


def test_a_worse_model_is_named_as_worse():
    n = 40
    hits = {
        "base": [True] * 10 + [False] * 30,
        "sft": [False] * n,
        "grpo": [True] * 10 + [False] * 30,
    }
    in_domain = rec_verdicts(results(hits), comparisons(hits))[0]
    assert "base > SFT (10 vs 0 samples" in in_domain
    assert "GRPO ~ base (0 vs 0 samples, not significant)" in in_domain


def test_pooled_test_sums_discordant_pairs_and_matches_one_big_test():
    """Seeds with independent samples pool into the test one would run on all their samples."""
    seeds = [
        ([True] * 3 + [False] * 7, [True] * 6 + [False] * 4),  # B wins 3, p = 0.125 alone
        ([False] * 10, [True] * 3 + [False] * 7),  # B wins 3 again
        ([True] + [False] * 9, [False] * 9 + [True]),  # one each way
    ]
    alone = [compare_hits(a, b).as_dict() for a, b in seeds]
    assert not any(t["b_is_better"] for t in alone)
    pooled = pooled_test(alone)
    everything = compare_hits(sum((a for a, _ in seeds), []), sum((b for _, b in seeds), []))
    assert (pooled["b_only"], pooled["a_only"]) == (everything.b_only, everything.a_only) == (7, 1)
    assert pooled["p_value"] == pytest.approx(everything.p_value) == pytest.approx(9 / 256)
    assert pooled["b_is_better"] and pooled["seeds_b_better"] == 0 and pooled["n"] == 30


def test_spread_against_statistics_and_nan_handling():
    values = [0.5, 0.7, 0.6]
    stats = spread(values)
    assert stats["mean"] == pytest.approx(0.6)
    assert stats["sd"] == pytest.approx(statistics.stdev(values))
    assert (stats["min"], stats["max"], stats["n"]) == (0.5, 0.7, 3)
    assert spread([0.4])["sd"] == 0.0
    assert spread([float("nan"), 0.2])["n"] == 1
    assert math.isnan(spread([float("nan")])["mean"])


def test_pool_seeds_and_pooled_verdict_lines_match_the_numbers():
    per_seed_hits = [
        {
            "base": [True] * 5 + [False] * 5,
            "sft": [True] * 4 + [False] * 6,
            "grpo": [True] * 8 + [False] * 2,
        },
        {
            "base": [True] * 6 + [False] * 4,
            "sft": [True] * 5 + [False] * 5,
            "grpo": [True] * 9 + [False],
        },
    ]
    pooled = pool_seeds([results(h) for h in per_seed_hits], ("rec", "acc@0.5"))
    assert pooled["grpo"]["eval_ood"]["mean"] == pytest.approx(0.85)
    assert pooled["sft"]["eval_in"]["sd"] == pytest.approx(statistics.stdev([0.4, 0.5]))
    tests = pool_comparisons([comparisons(h) for h in per_seed_hits])
    assert (
        tests["eval_ood"]["grpo_vs_sft"]["b_only"],
        tests["eval_ood"]["grpo_vs_sft"]["a_only"],
    ) == (8, 0)
    lines = pooled_verdicts(pooled, tests, 2)
    assert lines[1].startswith(
        "out of domain, 2 seeds pooled: Acc@0.5 base 0.550±0.071 / SFT 0.450±0.071 / GRPO 0.850±0.071."
    )
    assert "GRPO > SFT (8 vs 0 samples, p=0.0039; 0/2 seeds alone)" in lines[1]


def test_accuracy_by_kind_and_the_competence_bar(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(
        "\n".join(
            f'{{"id": "r{i}", "kind": "{kind}"}}'
            for i, kind in enumerate(["attribute"] * 4 + ["negation"] * 2)
        )
    )
    predictions = tmp_path / "predictions.jsonl"
    ious = [0.9, 0.5, 0.49, 0.7, 0.1, 0.6]  # attribute 3/4 (0.5 counts), negation 1/2
    predictions.write_text(
        "\n".join(f'{{"id": "r{i}", "iou": {iou}}}' for i, iou in enumerate(ious))
    )
    by_kind = accuracy_by_kind(predictions, data)
    assert by_kind["attribute"] == {"acc@0.5": 0.75, "n": 4.0}
    assert by_kind["negation"]["acc@0.5"] == 0.5 and by_kind["all"]["acc@0.5"] == pytest.approx(
        4 / 6
    )
    assert competence(by_kind) == {"bar": 0.5, "competent": True, "below_bar": []}
    assert competence(by_kind, bar=0.6)["below_bar"] == ["negation"]
    predictions.write_text('{"id": "elsewhere", "iou": 1.0}')
    with pytest.raises(ValueError, match="not a row"):
        accuracy_by_kind(predictions, data)


def test_where_boxes_land_tells_a_wrong_object_from_no_object(tmp_path):
    # One scene, hand-placed: the target (index 1) at [50, 0, 60, 10], another at [0, 0, 10, 10].
    objects = [
        ["circle", "red", "small", [0, 0, 10, 10]],
        ["star", "blue", "small", [50, 0, 60, 10]],
    ]
    data = tmp_path / "data.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"id": f"r{i}", "kind": "attribute", "objects": objects, "target": 1})
            for i in range(5)
        )
    )
    predictions = tmp_path / "predictions.jsonl"
    answers = [
        (0.8, [[51, 0, 60, 10]]),  # the named object (the eval's own IoU counts)
        (0.0, [[0, 0, 10, 9]]),  # the other object: IoU 0.9
        (0.0, [[0, 0, 10, 4]]),  # overlaps the other object, IoU 0.4: no object
        (0.0, [[20, 0, 40, 10]]),  # between the two: no object
        (0.0, []),  # no parsable box: no object
    ]
    predictions.write_text(
        "\n".join(
            json.dumps({"id": f"r{i}", "iou": iou, "pred": pred})
            for i, (iou, pred) in enumerate(answers)
        )
    )
    assert where_boxes_land(predictions, data) == {
        "named object": 0.2,
        "another object": 0.2,
        "no object": 0.6,
    }
    # Rows that do not describe their scene (not shapes data) give no breakdown.
    data.write_text('{"id": "r0", "kind": "attribute"}')
    assert where_boxes_land(predictions, data) is None
    data.write_text(json.dumps({"id": "r9", "objects": objects, "target": 1}))
    with pytest.raises(ValueError, match="not a row"):
        where_boxes_land(predictions, data)


def test_detection_verdict_reports_each_reward_over_seeds_from_the_start_map():
    monitors = ("pred_gt_box_ratio", "duplicate_box_rate", "empty_answer_rate")
    pooled = {
        "grpo_ap": {"mAP": spread([0.1, 0.3]), **{m: spread([2.0, 4.0]) for m in monitors}},
        "grpo_odlength": {"mAP": spread([0.2, 0.2]), **{m: spread([1.0, 1.0]) for m in monitors}},
    }
    for stats in pooled.values():
        stats["whole_image_box_rate"] = spread([0.0, 0.5])
        stats["well_formed_answer_rate"] = spread([0.25, 0.75])
    line = detection_verdict(pooled, 0.125)
    sd = statistics.stdev([0.1, 0.3])
    assert line.startswith(
        "detection (2 seeds, end of training, from the detection base's mAP 0.125)"
    )
    ap, odlength = line.split("; ")
    assert ap.split(": ", 1)[1].startswith(
        f"AP reward: mAP 0.200±{sd:.3f}, predicted/true boxes 3.0"
    )
    assert odlength.startswith("odLength: mAP 0.200±0.000, predicted/true boxes 1.0")
    assert "whole-image boxes 0.250" in ap and line.endswith(".")
    assert f"well-formed answers 0.500±{sd * 2.5:.3f}" in odlength
