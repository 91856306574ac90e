"""The --full demo path on a toy-sized plan: pretraining (cached), two seeds pooled, and the
detection ablation (AP vs odLength) with its hacking monitors."""

import json

import pytest

from vlm_r1 import demo
from vlm_r1.demo.verdicts import MODELS


@pytest.mark.slow
def test_full_mode_pools_seeds_and_runs_the_ovd_ablation(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_R1_CACHE", str(tmp_path / "cache"))
    tiny = demo.DemoPlan(
        model_size="test",
        n_pretrain=24,
        pretrain_tower_steps=2,
        pretrain_stages=(("locate+named", 3, 5e-4), ("rec_mix+named+negation", 2, 1e-3)),
        ovd_pretrain_steps=2,
        pretrain_batch=4,
        n_train=24,
        n_eval=6,
        seeds=2,
        budget_prompts=8,
        sft_batch=4,
        grpo_prompts_per_step=4,
        grpo_generations=2,
        max_completion_length=12,
        ovd_ablation=True,
        ovd_prompts=8,
        ovd_max_completion_length=16,
    )
    monkeypatch.setitem(demo.PLANS, "toy", tiny)
    summary = demo.run_demo(tmp_path / "run", "toy", seed=3)
    assert summary["seeds"] == [3, 4]
    base = summary["base"]
    assert base["rec_by_kind"]["all"]["n"] == 6 and isinstance(base["competent"], bool)
    assert 0.0 <= base["detector_ovd"]["mAP"] <= 1.0
    # Every scored competence answer lands somewhere: the named object, another one, or none.
    landing = base["boxes_land_on"]
    assert list(landing) == ["named object", "another object", "no object"]
    assert sum(landing.values()) == pytest.approx(1.0)
    assert landing["named object"] == pytest.approx(base["rec_by_kind"]["all"]["acc@0.5"])
    for study in summary["studies"]:
        for model in MODELS:
            assert study["results"][model]["eval_ood"]["rec"]["n"] == 6
    # Pooled over seeds whose eval samples differ: the pooled test counts every seed's pairs.
    pooled = summary["pooled"]["tests"]["eval_ood"]["grpo_vs_sft"]
    per_seed = [s["comparisons"]["eval_ood"]["grpo_vs_sft"] for s in summary["studies"]]
    assert pooled["n"] == 12 and pooled["b_only"] == sum(t["b_only"] for t in per_seed)
    eval_sets = [
        (tmp_path / "run" / "data" / f"seed{s}" / "rec_eval_ood.jsonl").read_text() for s in (3, 4)
    ]
    assert eval_sets[0] != eval_sets[1]
    assert sum(line.startswith("seed ") for line in summary["verdicts"]) == 4
    assert any(", 2 seeds pooled:" in line for line in summary["verdicts"])
    detection = summary["detection"]["pooled"]
    for name in ("grpo_ap", "grpo_odlength"):
        assert detection[name]["mAP"]["n"] == 2
        assert set(detection[name]) >= {"pred_gt_box_ratio", "duplicate_box_rate"}
    assert summary["verdicts"][-1].startswith(
        "detection (2 seeds, end of training, from the detection base's mAP "
    )
    history = (tmp_path / "run" / "grpo_ap_s3" / "metrics.jsonl").read_text().splitlines()
    assert "monitor/duplicate_box_rate" in json.loads(history[-1])
    html = (tmp_path / "run" / "report.html").read_text()
    assert "grpo (2 seeds)" in html and "grpo_odlength_s4" in html and "pretrain_stage1" in html
    assert "pretrain_detector" in html
    assert "the base&#x27;s boxes land on: named object" in html  # notes are html-escaped
    # A second run reuses the cached base and detector: nothing is pretrained again.
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "demo").iterdir())
    assert cached == ["base", "detector"]

    def no_training(*args, **kwargs):
        raise AssertionError("a cached stage was trained again")

    monkeypatch.setattr(demo, "sft", no_training)
    monkeypatch.setattr(demo.base, "sft", no_training)
    base_again, detector_again = demo._pretrain(tiny, tmp_path / "run" / "data" / "pretrain")
    assert base_again.is_relative_to(tmp_path / "cache" / "demo") and detector_again.is_dir()
    assert (base_again / "config.json").is_file()
