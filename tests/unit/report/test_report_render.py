"""A report built from small synthetic runs, opened in headless Chromium as a reader would."""

import shutil

import pytest

from vlm_r1.report.html import MIN_ROLLOUT_WIDTH, PANEL_WIDTH, build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

EVAL = {"grpo": {"eval_in": {"rec": {"acc@0.5": 0.25, "miou": 0.31}}}}


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: install Debian's chromium (apt-get install chromium; "
    ".ci/run does) to render the report",
)
def test_synthetic_report_renders_readably(make_run, synthetic, tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright missing: pip install -e '.[dev]'"
    )
    runs = {
        "sft": make_run("sft", synthetic.SFT_CONFIG, synthetic.sft_rows(), rollouts=0),
        "grpo": make_run("grpo", synthetic.GRPO_CONFIG, synthetic.grpo_rows(), rollouts=3),
    }
    report = build_report(runs, tmp_path / "report.html", EVAL, title="synthetic")
    plots = sorted((tmp_path / "report_plots").glob("*.png"))

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            figures = page.eval_on_selector_all(
                "figure.panel",
                """figs => figs.map(f => {
                    const img = f.querySelector('img'), cap = f.querySelector('figcaption');
                    return {alt: img.alt, ok: img.complete && img.naturalWidth > 0,
                            shown: img.getBoundingClientRect().width,
                            recipe: f.closest('section').dataset.recipe,
                            caption: cap ? cap.textContent : ''};
                })""",
            )
            rollouts = page.eval_on_selector_all(
                "img[alt=rollout]",
                """imgs => imgs.map(i => ({natural: i.naturalWidth,
                    shown: i.getBoundingClientRect().width,
                    rendering: getComputedStyle(i).imageRendering}))""",
            )
        finally:
            browser.close()

    assert not errors, errors
    # One figure per panel drawn; each loaded, shown at the panel width, with its line.
    assert len(figures) == len(plots) >= 10
    assert all(f["ok"] and f["shown"] == PANEL_WIDTH for f in figures), figures
    assert all(f["caption"].strip() for f in figures), [f["alt"] for f in figures]
    # The SFT and the GRPO loss are separate panels, each in its recipe's section.
    losses = {(f["recipe"], f["alt"]) for f in figures if f["alt"].endswith(": loss")}
    assert losses == {("sft", "SFT: loss"), ("grpo", "GRPO: loss")}
    entropy = [f for f in figures if "entropy" in f["alt"]]
    assert len(entropy) == 1 and "exploring" in entropy[0]["caption"]
    # Rollout images: at least 256 px on screen, at their own size (the browser does not
    # resample them), and kept pixel-sharp where a dense screen would.
    assert len(rollouts) == 3
    for image in rollouts:
        assert image["natural"] >= MIN_ROLLOUT_WIDTH and image["shown"] == image["natural"]
        assert image["rendering"] == "pixelated"
