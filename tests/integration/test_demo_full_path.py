"""The --full demo path (detection ablation: AP vs odLength) on a toy-sized plan."""

import json

import pytest

from vlm_r1 import demo


@pytest.mark.slow
def test_full_mode_runs_the_ovd_ablation(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_R1_CACHE", str(tmp_path / "cache"))
    tiny = demo.DemoPlan(
        n_train=24,
        n_eval=6,
        warm_steps=3,
        ovd_warm_steps=2,
        warm_batch=4,
        budget_prompts=8,
        sft_batch=4,
        grpo_prompts_per_step=4,
        grpo_generations=2,
        max_completion_length=12,
        ovd_ablation=True,
        ovd_prompts=8,
    )
    monkeypatch.setitem(demo.PLANS, "toy", tiny)
    summary = demo.run_demo(tmp_path / "run", "toy")
    results = summary["results"]
    for name in ("grpo_ap", "grpo_odlength"):
        ovd = results[name]["eval_in"]["ovd"]
        assert 0.0 <= ovd["mAP"] <= 1.0 and ovd["n"] == 6
    assert any(line.startswith("detection:") for line in summary["verdicts"])
    history = (tmp_path / "run" / "grpo_ap" / "metrics.jsonl").read_text().splitlines()
    assert "monitor/duplicate_box_rate" in json.loads(history[-1])
    assert (tmp_path / "run" / "report.html").is_file()
