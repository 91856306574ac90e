"""``vlm-r1 demo --quick`` end to end, and its HTML report rendered in headless Chromium."""

import json
import os
import shutil
import subprocess
import sys

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "VLM_R1_CACHE": str(out / "cache")}  # a cold cache, as on a fresh machine
    result = subprocess.run(
        [sys.executable, "-m", "vlm_r1.cli", "demo", "--quick", "--out", str(out / "run")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out / "run", result.stdout


@pytest.mark.slow
def test_quick_demo_writes_metrics_and_report(demo_run):
    run, stdout = demo_run
    summary = json.loads((run / "metrics.json").read_text())
    (study,) = summary["studies"]
    for model in ("base", "sft", "grpo"):
        for split in ("eval_in", "eval_ood"):
            rec = study["results"][model][split]["rec"]
            assert 0.0 <= rec["acc@0.5"] <= 1.0 and 0.0 <= rec["miou"] <= 1.0
    assert len(summary["verdicts"]) == 2 and "out of domain" in summary["verdicts"][1]
    assert set(summary["base"]["rec_by_kind"]) >= {"all", "attribute", "relation"}
    assert (run / "report.html").stat().st_size > 10_000
    assert "report:" in stdout and "REC Acc@0.5" in stdout and "by expression kind" in stdout
    assert "the base's boxes land on: named object" in stdout
    history = [
        json.loads(line) for line in (run / "grpo_s0" / "metrics.jsonl").read_text().splitlines()
    ]
    assert "monitor/why0/no_answer" in history[-1] and "reward/accuracy" in history[-1]


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_report_renders_in_headless_chromium(demo_run):
    from playwright.sync_api import sync_playwright

    run, _ = demo_run
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.goto((run / "report.html").as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.alt, i.naturalWidth])")
        browser.close()
    plots = [w for alt, w in widths if alt != "rollout"]
    rollouts = [w for alt, w in widths if alt == "rollout"]
    assert len(plots) >= 5 and all(w > 0 for w in plots), widths
    assert rollouts and all(w > 0 for w in rollouts), widths


@pytest.mark.slow
def test_report_cli_rejects_a_non_run_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vlm_r1.cli", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "has no metrics.jsonl" in result.stderr
