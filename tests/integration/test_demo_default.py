"""``vlm-r1 demo`` as a newcomer runs it (README command 1's job), on a cold cache: from the
shipped base."""

import json
import os
import re
import subprocess
import sys

import pytest

from vlm_r1.demo.verdicts import MODELS, NAMES, SPLITS


@pytest.mark.slow
def test_default_demo_reports_the_base_and_verdicts_that_match_its_numbers(tmp_path):
    env = {**os.environ, "VLM_R1_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "vlm_r1.cli", "demo", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=2400,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    base = summary["base"]
    kinds = {"attribute", "relation", "superlative", "ordinal", "negation"}
    assert set(base["rec_by_kind"]) == kinds | {"all"}
    assert base["rec_by_kind"]["all"]["n"] == summary["plan"]["n_eval"]
    assert base["competent"] == (not base["below_bar"])
    # The shipped base, loaded as built: it finds the named object far above chance (a base
    # pretrained for the old 600 steps scored 0.09; wrong weights or tokenizer score ~0).
    assert "the base: shipped with vlm-r1" in result.stdout
    assert base["rec_by_kind"]["all"]["acc@0.5"] >= 0.3
    (study,) = summary["studies"]
    results, comparisons = study["results"], study["comparisons"]
    # Each verdict line states this run's numbers and the paired tests' outcomes.
    for line, (split, label) in zip(summary["verdicts"], SPLITS, strict=True):
        assert line.startswith(f"seed 0, {label}: Acc@0.5 ")
        shown = [float(x) for x in re.findall(r"\d\.\d{3}", line)[:6]]
        accs = [results[m][split]["rec"]["acc@0.5"] for m in MODELS]
        mious = [results[m][split]["rec"]["miou"] for m in MODELS]
        assert shown == pytest.approx([round(v, 3) for v in accs + mious], abs=1e-9)
        for b, a in (("sft", "base"), ("grpo", "base"), ("grpo", "sft")):
            if comparisons[split][f"{b}_vs_{a}"]["b_is_better"]:
                assert f"{NAMES[b]} > {NAMES[a]} (" in line
            elif comparisons[split][f"{a}_vs_{b}"]["b_is_better"]:
                assert f"{NAMES[a]} > {NAMES[b]} (" in line
            else:
                assert f"{NAMES[b]} ~ {NAMES[a]} (" in line
    assert results["sft"]["eval_in"]["rec"]["n"] == summary["plan"]["n_eval"]
