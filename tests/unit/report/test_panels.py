"""Which curves share a panel, which points are drawn, and the healthy-run line of each panel."""

import ast
import json
import math
from pathlib import Path

import torch
from PIL import Image

import vlm_r1
from vlm_r1.data.sample import BoxSolution
from vlm_r1.models.boxes import BoxSpace
from vlm_r1.report.plots import (
    CAPTIONS,
    GRPO,
    OTHER,
    PANEL_DPI,
    PANEL_SIZE_INCHES,
    PANELS,
    SFT,
    caption_for,
    collect_panels,
    finite_points,
    plot_runs,
    recipe_of,
)
from vlm_r1.rl.losses import LOSSES, LossInputs, LossSettings
from vlm_r1.rl.monitors import completion_monitors

PACKAGE = Path(vlm_r1.__file__).parent


def test_sft_and_grpo_losses_never_share_an_axis(make_run, synthetic):
    runs = {
        "sft": make_run("sft", synthetic.SFT_CONFIG, synthetic.sft_rows()),
        "grpo": make_run("grpo", synthetic.GRPO_CONFIG, synthetic.grpo_rows()),
        "grpo_b": make_run("grpo_b", synthetic.GRPO_CONFIG, synthetic.grpo_rows(seed=1)),
    }
    panels = plot_runs(runs, runs["sft"].parent / "plots")
    losses = [p for p in panels if p.slug == "loss"]
    assert [(p.recipe, [s.label for s in p.series]) for p in losses] == [
        (SFT, ["sft"]),
        (GRPO, ["grpo", "grpo_b"]),  # runs of one recipe are overlaid for comparison
    ]
    assert losses[0].caption != losses[1].caption  # the same name means different things
    assert all(panel.path.is_file() for panel in panels)
    assert len({panel.path for panel in panels}) == len(panels)
    # Drawn at PANEL_DPI: the PNG is the size the HTML expects.
    with Image.open(losses[0].path) as image:
        assert image.size == (
            round(PANEL_SIZE_INCHES[0] * PANEL_DPI),
            round(PANEL_SIZE_INCHES[1] * PANEL_DPI),
        )


def test_one_panel_per_quantity_and_families_labelled_by_term(make_run, synthetic):
    run = make_run("grpo", synthetic.GRPO_CONFIG, synthetic.grpo_rows())
    panels = {p.slug: p for p in collect_panels({"grpo": synthetic.grpo_rows()}, {"grpo": GRPO})}
    assert panels["reward"].series[0].label == "grpo" and not panels["reward"].legend
    assert [s.label for s in panels["reward_terms"].series] == ["accuracy", "format"]
    assert panels["reward_terms"].legend  # a single run, but the lines are different terms
    assert [s.label for s in panels["why0"].series] == ["iou_zero", "no_answer"]
    assert "entropy" in panels and panels["entropy"].primary
    # Every logged metric is drawn exactly once.
    drawn = [s for p in panels.values() for s in p.series]
    logged = {k for row in synthetic.grpo_rows() for k in row} - {"step"}
    assert len(drawn) == len(logged)
    assert recipe_of(run, []) == GRPO


def test_undefined_points_are_skipped_not_drawn():
    history = [
        {"step": 1, "m": 1.0},
        {"step": 2, "m": math.nan},  # the fixed monitor's "undefined"
        {"step": 3, "m": math.inf},
        {"step": 4, "m": None},
        {"step": 5, "m": "n/a"},
        {"step": 6},
        {"step": 7, "m": True},
        {"step": 8, "m": 2},
    ]
    assert finite_points(history, "m") == ([1.0, 8.0], [1.0, 2.0])
    # Read back from JSON as the report reads metrics.jsonl (NaN is written as NaN).
    rows = [json.loads(json.dumps(row)) for row in history[:3]]
    assert finite_points(rows, "m") == ([1.0], [1.0])


def test_spread_panel_has_a_gap_where_the_monitor_was_undefined(synthetic):
    panels = collect_panels({"grpo": synthetic.grpo_rows()}, {"grpo": GRPO})
    (spread,) = [p for p in panels if p.slug == "spread"]
    assert 7.0 not in spread.series[0].steps and len(spread.series[0].steps) == 19
    assert max(spread.series[0].values) == 0.9


def test_recipe_from_config_then_from_metrics(make_run, synthetic):
    assert recipe_of(make_run("a", synthetic.SFT_CONFIG, []), []) == SFT
    assert recipe_of(make_run("b", synthetic.GRPO_CONFIG, []), []) == GRPO
    assert recipe_of(make_run("c", None, []), synthetic.grpo_rows()) == GRPO
    assert recipe_of(make_run("d", None, []), synthetic.sft_rows()) == SFT
    assert recipe_of(make_run("e", None, []), [{"step": 1, "x": 1.0}]) == OTHER


def test_unknown_and_validation_metrics_get_a_panel(synthetic):
    rows = [
        {**row, "eval/acc@0.5": 0.1 * row["step"], "mystery": 1.0} for row in synthetic.grpo_rows()
    ]
    rows[3]["eval/acc@0.5"] = math.nan
    panels = {p.slug: p for p in collect_panels({"grpo": rows}, {"grpo": GRPO})}
    assert panels["eval/acc@0.5"].primary and panels["eval/acc@0.5"].caption == CAPTIONS["eval/"]
    assert not panels["mystery"].primary and panels["mystery"].caption is None


# --------------------------------------------------------------------- every metric has a line
def _name(key: ast.expr) -> str | None:
    """A constant string key, or an f-string key's constant prefix (f"reward/{k}" -> reward/)."""
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return key.value
    if isinstance(key, ast.JoinedStr) and isinstance(key.values[0], ast.Constant):
        return key.values[0].value
    return None


def _dict_keys(node: ast.Dict) -> set[str]:
    """Keys of a dict display, including those of a ``**{... for ...}`` comprehension in it."""
    keys = {_name(k) for k in node.keys if k is not None}
    keys |= {
        _name(v.key)
        for k, v in zip(node.keys, node.values, strict=True)
        if k is None and isinstance(v, ast.DictComp)
    }
    return keys - {None}


def logged_names(path: Path, functions: set[str]) -> set[str]:
    """Metric names a recipe's source writes into ``metrics`` inside ``functions``: dict
    displays assigned to ``metrics`` or returned by ``update``, ``metrics["x"] = ...`` and
    ``metrics.update(x=...)``. Read from the source, so a metric added later is seen too."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef) or func.name not in functions:
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id == "metrics":
                        if isinstance(node.value, ast.Dict):
                            names |= _dict_keys(node.value)
                    elif (
                        isinstance(target, ast.Subscript)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "metrics"
                        and isinstance(target.slice, ast.Constant)
                    ):
                        names.add(target.slice.value)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "update"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "metrics"
            ):
                names |= {k.arg for k in node.keywords if k.arg}
                names |= {n for a in node.args if isinstance(a, ast.Dict) for n in _dict_keys(a)}
            elif (
                isinstance(node, ast.Return)
                and func.name == "update"
                and isinstance(node.value, ast.Dict)
            ):
                names |= _dict_keys(node.value)
    return names


def grpo_metric_names() -> set[str]:
    names = logged_names(PACKAGE / "rl" / "trainer.py", {"train", "update", "_log"})
    # What the losses and the monitors return, from running them.
    logps = torch.log(torch.full((2, 3), 0.5))
    inputs = LossInputs(logps, logps - 0.1, torch.tensor([1.0, -1.0]), torch.ones(2, 3), logps)
    for loss in LOSSES.values():
        names |= set(loss(inputs, LossSettings(beta=0.04))[1])
    space = BoxSpace("norm1000", (100, 100))
    solution = BoxSolution(((10.0, 10.0, 30.0, 30.0),), (None,))
    names |= set(
        completion_monitors(["<answer>[1, 1, 9, 9]</answer>"], [solution], ["rec"], [space])
    )
    return names


def sft_metric_names() -> set[str]:
    return logged_names(PACKAGE / "sft.py", {"train", "update"})


def test_every_metric_a_run_logs_has_a_healthy_run_line():
    grpo, sft = grpo_metric_names(), sft_metric_names()
    # The extraction still finds what it must (a refactor that blinds it fails here).
    assert {"reward", "reward/", "loss", "kl", "clip_low", "step_seconds", "grad_norm"} <= grpo
    assert "monitor/centre_spread_ratio" in grpo and "monitor/why0/iou_zero" in grpo
    assert {"loss", "token_accuracy", "step_seconds", "skipped"} <= sft
    missing = [(GRPO, n) for n in sorted(grpo) if caption_for(n, GRPO) is None]
    missing += [(SFT, n) for n in sorted(sft) if caption_for(n, SFT) is None]
    assert not missing, f"add a line to report.plots.CAPTIONS for {missing}"


def test_caption_lookup_order():
    assert caption_for("loss", SFT) == CAPTIONS["sft:loss"]
    assert caption_for("loss", GRPO) == CAPTIONS["grpo:loss"]
    assert caption_for("loss") == CAPTIONS["loss"]
    assert caption_for("reward/iou") == CAPTIONS["reward/"]  # any reward term
    assert caption_for("eval/rec/acc@0.5") == CAPTIONS["eval/"]
    assert caption_for("monitor/why0/no_answer") == CAPTIONS["monitor/why0/"]
    assert caption_for("something_new") is None
    entropy = caption_for("entropy", GRPO)
    assert "falls slowly" in entropy and "explor" in entropy


def test_every_panel_has_a_line_and_every_line_is_one_line():
    for spec in PANELS:
        assert caption_for(spec.keys[0], GRPO) or caption_for(spec.keys[0], SFT), spec.slug
    for name, text in CAPTIONS.items():
        assert "\n" not in text and len(text) < 200, name
