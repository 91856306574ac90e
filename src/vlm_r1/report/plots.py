"""Metric curves with matplotlib (Agg backend), written as PNG: one panel per quantity per recipe.

A run's recipe (GRPO or SFT) decides which panels it joins: runs of one recipe are overlaid, so
two GRPO runs can be compared, but a GRPO and an SFT loss (different quantities under one name)
never share an axis. Each curve is drawn twice, as TensorBoard and W&B do: faint, the logged
value at every step; solid, its debiased exponential moving average (``ema``), which is what a
reader follows by eye. Non-finite values mean "undefined at that step" (e.g. box monitors on a
batch without boxes) and are left out, never drawn as 0. Every panel has one line saying what
a healthy run looks like (``CAPTIONS``), so the report can be read without knowing each metric.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_r1.tracking import read_jsonl

GRPO, SFT, OTHER = "grpo", "sft", "run"
RECIPE_NAMES = {GRPO: "GRPO", SFT: "SFT", OTHER: "Other runs"}


@dataclass(frozen=True)
class PanelSpec:
    """One quantity: an exact metric name, or a family of same-unit metrics (names ending in
    ``/`` are prefixes, such as the reward terms); with ``split``, one panel per matching name.
    ``smooth=False`` for curves that are not noisy measurements (a schedule, a counter): an
    average would only lag behind them."""

    slug: str
    keys: tuple[str, ...]
    title: str
    primary: bool = True
    split: bool = False
    smooth: bool = True


#: Panel order within a recipe. Primary panels come first (the ones to read at a glance);
#: the rest (optimisation, throughput, bookkeeping) follow under "more". A logged metric named
#: nowhere here still gets its own panel, after these.
PANELS: tuple[PanelSpec, ...] = (
    PanelSpec("reward", ("reward",), "total reward"),
    PanelSpec("reward_terms", ("reward/",), "reward terms"),
    PanelSpec("eval", ("eval/",), "validation", split=True),
    PanelSpec("token_accuracy", ("token_accuracy",), "token accuracy"),
    PanelSpec("loss", ("loss",), "loss"),
    PanelSpec("kl", ("kl",), "KL to reference"),
    PanelSpec("entropy", ("entropy",), "token entropy (nats)"),
    PanelSpec("length", ("completion_length",), "completion length (tokens)"),
    PanelSpec("format", ("monitor/format_pass",), "strict format pass rate"),
    PanelSpec("spread", ("monitor/centre_spread_ratio",), "box-centre spread / true spread"),
    PanelSpec("empty", ("monitor/empty_answer_rate",), "empty answer rate"),
    PanelSpec("whole_image", ("monitor/whole_image_box_rate",), "whole-image box rate"),
    PanelSpec("duplicates", ("monitor/duplicate_box_rate",), "duplicate box rate"),
    PanelSpec("boxes", ("monitor/pred_gt_box_ratio",), "predicted / true boxes"),
    PanelSpec("well_formed", ("monitor/well_formed_answer_rate",), "well-formed detection answers"),
    PanelSpec("why0", ("monitor/why0/",), "why accuracy was 0 (share of box samples)"),
    PanelSpec("aha", ("monitor/recheck_rate",), "re-checking in <think>"),
    PanelSpec("grad_norm", ("grad_norm",), "gradient norm", primary=False),
    PanelSpec("reward_std", ("reward_std",), "reward std", primary=False),
    PanelSpec("advantage", ("advantage_abs",), "mean |advantage|", primary=False),
    PanelSpec("zero_var", ("zero_variance_groups",), "zero-variance groups", primary=False),
    PanelSpec("clip_low", ("clip_low",), "clipped (low) token share", primary=False),
    PanelSpec("clip_high", ("clip_high",), "clipped (high) token share", primary=False),
    PanelSpec("ratio", ("ratio",), "importance ratio", primary=False),
    PanelSpec("truncated", ("truncated_fraction",), "truncated completions", primary=False),
    PanelSpec("length_max", ("completion_length_max",), "longest completion", primary=False),
    PanelSpec("think_words", ("monitor/think_words",), "words in <think>", primary=False),
    PanelSpec("lr", ("learning_rate",), "learning rate", primary=False, smooth=False),
    PanelSpec("tokens_per_second", ("tokens_per_second",), "tokens / second", primary=False),
    PanelSpec("step_seconds", ("step_seconds",), "seconds / step", primary=False),
    PanelSpec("too_long", ("prompts_too_long",), "prompts too long", primary=False),
    PanelSpec(
        "skipped_steps", ("skipped_steps",), "skipped updates (total)", primary=False, smooth=False
    ),
    PanelSpec("skipped", ("skipped",), "update skipped", primary=False, smooth=False),
    PanelSpec(
        "optimizer_steps", ("optimizer_steps",), "optimizer steps", primary=False, smooth=False
    ),
)

#: What a healthy run looks like, one line per metric. Keys are metric names, prefixes ending in
#: ``/`` (a family), or ``recipe:name`` where one name means different things per recipe.
CAPTIONS: dict[str, str] = {
    "reward": "Healthy: rises, then plateaus. Flat from the start: no group had a reward "
    "spread to learn from (see zero-variance groups).",
    "reward/": "Healthy: every term rises or holds. Format saturating while accuracy stays "
    "flat: the policy learnt the template, not the task.",
    "eval/": "Validation during training. Healthy: improves with the training curves; falling "
    "while the training reward rises means overfitting or reward hacking.",
    "token_accuracy": "Healthy: rises towards 1 as the targets are learnt; flat means the "
    "learning rate is too low or the targets cannot be fitted.",
    "sft:loss": "Healthy: falls fast, then flattens slowly. Rising again or spiking: the "
    "learning rate is too high.",
    "grpo:loss": "Not a progress measure: with group-normalised advantages it hovers around 0. "
    "Read the reward instead; large spikes mean unstable updates.",
    "loss": "Healthy: falls or holds steady; spikes mean unstable updates.",
    "kl": "Healthy: starts at 0 and grows slowly and smoothly. A sudden jump: the policy leaves "
    "the reference fast (lower the learning rate or raise algo.beta).",
    "entropy": "Healthy: falls slowly. A collapse to ~0 early means the policy stopped "
    "exploring: a group's completions all alike, nothing left to compare.",
    "completion_length": "Healthy: steady or drifting slowly. Collapsing to a few tokens, or "
    "climbing to the length limit (see truncated completions), is a warning.",
    "completion_length_max": "Healthy: below rollout.max_completion_length; pinned at it means "
    "some completions are cut off.",
    "truncated_fraction": "Healthy: near 0. Rising: completions hit "
    "rollout.max_completion_length and lose their answer.",
    "monitor/format_pass": "Healthy: rises to near 1 within the first steps and stays there.",
    "monitor/centre_spread_ratio": "Healthy: near 1, answers move with the targets. Towards 0: "
    "one typical box for every image (a hedge). Gaps: too few REC boxes in the batch.",
    "monitor/empty_answer_rate": "Healthy: near 0 and falling. Rising: the policy learns to "
    "answer nothing (reward hacking).",
    "monitor/whole_image_box_rate": "Healthy: near 0. Rising: a box over the whole image is "
    "being rewarded (reward hacking).",
    "monitor/duplicate_box_rate": "Healthy: near 0. Rising: floods of repeated boxes (reward "
    "hacking on detection).",
    "monitor/pred_gt_box_ratio": "Healthy: near 1, as many boxes as objects. Well above 1: box "
    "flooding; below 1: missed objects.",
    "monitor/well_formed_answer_rate": "Healthy: near 1 and holding. Falling: detection "
    "answers stop being the JSON list the prompt asks for (the strict detection rewards pay 0 "
    "for them; a lenient reward would be hacked).",
    "monitor/why0/": "Healthy: every share falls. no_answer or unparsable high: a format "
    "problem; outside_image: a coordinate-system mismatch; iou_zero: real misses.",
    "monitor/recheck_rate": "May rise as reasoning develops (re-checking, the 'aha' moment); "
    "an observation, not a target.",
    "monitor/think_words": "Healthy: steady or slowly growing. Falling to 0: the policy dropped "
    "its reasoning.",
    "grad_norm": "Healthy: steady, without growing spikes. Always above optim.max_grad_norm "
    "means every step is clipped.",
    "reward_std": "Healthy: clearly above 0. Near 0: the completions score alike and there is "
    "nothing to learn from.",
    "advantage_abs": "Healthy: steady and clearly above 0. Near 0: no learning signal (groups "
    "without a reward spread).",
    "zero_variance_groups": "Healthy: low. Near 1: almost every group scored all its "
    "completions alike (too easy or too hard), so no gradient.",
    "clip_low": "Healthy: a few percent at most (0 with algo.num_iterations=1). Large: each "
    "update moves the policy further than algo.epsilon_low allows.",
    "clip_high": "Healthy: a few percent at most (0 with algo.num_iterations=1). Large: each "
    "update moves the policy further than algo.epsilon_high allows.",
    "ratio": "Healthy: 1 (exactly 1 with algo.num_iterations=1). Drifting from 1: each update "
    "moves the policy far from the one that sampled.",
    "learning_rate": "The schedule as configured (warm-up, then constant or decaying): a check "
    "that the optimiser runs the settings meant.",
    "tokens_per_second": "Healthy: flat. A drop: slower generation (longer prompts, memory "
    "pressure).",
    "step_seconds": "Healthy: flat. Steady growth points to longer completions or memory pressure.",
    "prompts_too_long": "Healthy: 0. Above 0: prompts dropped for exceeding "
    "rollout.max_prompt_length.",
    "skipped_steps": "Healthy: 0 throughout. Each rise is an update skipped for a non-finite "
    "loss or gradient.",
    "skipped": "Healthy: 0. A 1 marks an update skipped for a non-finite loss or gradient.",
    "optimizer_steps": "Healthy: rises by 1 per step; a flat stretch means skipped updates.",
}


def caption_for(key: str, recipe: str | None = None) -> str | None:
    """The healthy-run line for ``key``: the recipe's own entry, then the name, then the
    longest family prefix; ``None`` for a metric nobody described (its panel has no line)."""
    names = ([f"{recipe}:{key}"] if recipe else []) + [key]
    for name in names:
        if name in CAPTIONS:
            return CAPTIONS[name]
    prefixes = [p for p in CAPTIONS if p.endswith("/") and key.startswith(p)]
    return CAPTIONS[max(prefixes, key=len)] if prefixes else None


def ema(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average divided by ``1 - weight**k``
    (k finite values seen so far), so the curve starts at the first value instead of rising
    from 0. Non-finite values stay NaN and leave the average untouched. ``weight`` in [0, 1):
    0 is the raw curve, towards 1 smoother."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out, average, seen = [], 0.0, 0
    for value in values:
        if not math.isfinite(value):
            out.append(math.nan)
            continue
        seen += 1
        average = weight * average + (1.0 - weight) * value
        out.append(average / (1.0 - weight**seen))
    return out


def smoothing_weight(points: int) -> float:
    """EMA weight for a curve of ``points`` values: an averaging window of about a twentieth of
    the curve, between 2.5 points (TensorBoard's default weight, 0.6) and 50 (0.98), so a
    short demo is not flattened and a long run is not left noisy."""
    window = min(max(points / 20.0, 2.5), 50.0)
    return 1.0 - 1.0 / window


def read_history(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    return read_jsonl(path)


def recipe_of(run: Path, history: list[dict[str, Any]]) -> str:
    """``grpo`` or ``sft`` from the run's saved config (a GRPO config has a ``rollout``
    section), else from what it logged; ``run`` when neither tells."""
    config_path = Path(run) / "config.json"
    try:
        config = json.loads(config_path.read_text()) if config_path.is_file() else None
    except (OSError, json.JSONDecodeError):
        config = None
    if isinstance(config, dict):
        return GRPO if "rollout" in config else SFT
    keys = {k for row in history for k in row}
    if "reward" in keys:
        return GRPO
    if "token_accuracy" in keys:
        return SFT
    return OTHER


@dataclass
class Series:
    """One curve: a run's metric at the steps where it is a finite number."""

    label: str
    steps: list[float]
    values: list[float]


@dataclass
class Panel:
    recipe: str
    slug: str
    title: str
    caption: str | None
    primary: bool
    series: list[Series] = field(default_factory=list)
    legend: bool = False
    smooth: bool = True
    runs: list[str] = field(default_factory=list)  # every run of this recipe in the report
    path: Path | None = None


def finite_points(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) where ``key`` was logged as a finite number: NaN/inf (undefined at that
    step) and anything not a number are skipped, so they neither plot nor flatten the axis."""
    points = sorted(
        (float(row["step"]), float(row[key]))
        for row in history
        if _number(row.get(key)) and _number(row.get("step")) and math.isfinite(row[key])
    )
    return [step for step, _ in points], [value for _, value in points]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _matches(key: str, pattern: str) -> bool:
    return key == pattern or (pattern.endswith("/") and key.startswith(pattern))


def collect_panels(
    histories: dict[str, list[dict[str, Any]]], recipes: dict[str, str]
) -> list[Panel]:
    """Panels with their curves, grouped by recipe (SFT, GRPO, others), in ``PANELS`` order,
    then one panel for each metric ``PANELS`` does not name; a panel with no finite point is
    left out. Only runs of the same recipe share a panel."""
    order = [r for r in (SFT, GRPO) if r in recipes.values()]
    order += sorted(set(recipes.values()) - set(order))
    panels: list[Panel] = []
    for recipe in order:
        runs = {name: h for name, h in histories.items() if recipes[name] == recipe}
        keys = sorted({k for h in runs.values() for row in h for k in row} - {"step"})
        for panel, panel_keys, family in _layout(recipe, keys):
            panel.series = _series(runs, panel_keys, family)
            panel.legend = len(panel.series) > 1 or family
            panel.runs = list(runs)
            if panel.series:
                panels.append(panel)
    return panels


def _layout(recipe: str, keys: list[str]) -> list[tuple[Panel, list[str], bool]]:
    """Which of ``keys`` each panel of ``recipe`` draws (each key in exactly one panel), and
    whether the panel is a family (several names of one quantity, such as the reward terms)."""
    covered: set[str] = set()
    out: list[tuple[Panel, list[str], bool]] = []
    for spec in PANELS:
        matching = [k for k in keys if k not in covered and any(_matches(k, p) for p in spec.keys)]
        covered.update(matching)
        if spec.split:
            out += [
                (
                    Panel(recipe, k, k, caption_for(k, recipe), spec.primary, smooth=spec.smooth),
                    [k],
                    False,
                )
                for k in matching
            ]
        elif matching:
            caption = caption_for(spec.keys[0], recipe)
            panel = Panel(recipe, spec.slug, spec.title, caption, spec.primary, smooth=spec.smooth)
            family = any(p.endswith("/") for p in spec.keys)
            out.append((panel, matching, family))
    for key in keys:
        if key not in covered:
            panel = Panel(recipe, key, key, caption_for(key, recipe), primary=False)
            out.append((panel, [key], False))
    return out


def _series(runs: dict[str, list[dict[str, Any]]], keys: list[str], family: bool) -> list[Series]:
    """One series per run and key, labelled by run; in a family (the reward terms) by the
    key's last part, with the run's name too when several runs share the panel."""
    out = []
    for name, history in runs.items():
        for key in keys:
            steps, values = finite_points(history, key)
            if not steps:
                continue
            part = key.rsplit("/", 1)[-1]
            label = (f"{name}: {part}" if len(runs) > 1 else part) if family else name
            out.append(Series(label, steps, values))
    return out


#: Rendered at 1.5 times the size the HTML shows (630 px for 420), so curves stay sharp on
#: high-density screens at a modest file size.
PANEL_SIZE_INCHES = (4.2, 2.6)
PANEL_DPI = 150
RAW_ALPHA = 0.25


def draw_panel(panel: Panel, path: Path) -> Path:
    """One PNG: per series the faint raw curve and its EMA in the same colour (the raw curve
    alone, solid, where the panel is not smoothed; a dot for a single point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=PANEL_SIZE_INCHES, dpi=PANEL_DPI)
    try:
        for i, series in enumerate(panel.series):
            colour = f"C{i % 10}"
            if len(series.steps) == 1:
                ax.plot(series.steps, series.values, "o", color=colour, label=series.label)
                continue
            if not panel.smooth:
                ax.plot(
                    series.steps, series.values, color=colour, linewidth=1.8, label=series.label
                )
                continue
            smooth = ema(series.values, smoothing_weight(len(series.values)))
            ax.plot(series.steps, series.values, color=colour, alpha=RAW_ALPHA, linewidth=1.0)
            ax.plot(series.steps, smooth, color=colour, linewidth=1.8, label=series.label)
        ax.set_title(f"{RECIPE_NAMES.get(panel.recipe, panel.recipe)}: {panel.title}", fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if panel.legend:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def plot_runs(runs: dict[str, Path], out_dir: Path) -> list[Panel]:
    """Every panel with data, drawn as ``NN_<recipe>_<slug>.png`` in ``out_dir`` (numbered in
    report order, so two metric names that differ only in punctuation cannot collide)."""
    histories = {name: read_history(path) for name, path in runs.items()}
    recipes = {name: recipe_of(path, histories[name]) for name, path in runs.items()}
    panels = collect_panels(histories, recipes)
    for number, panel in enumerate(panels):
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in panel.slug)
        panel.path = draw_panel(panel, Path(out_dir) / f"{number:02d}_{panel.recipe}_{safe}.png")
    return panels
