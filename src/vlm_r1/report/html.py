"""One self-contained HTML report: plots, the evaluation table and a rollout gallery, with
every image embedded (base64), so the file can be mailed or opened anywhere.

Curves come one panel per quantity per recipe, each with a line saying what a healthy run
looks like (``report.plots``). Rollout images are enlarged without blur, the boxes drawn at
the enlarged size (``rollout_images``).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from PIL import Image

from vlm_r1.report.plots import RECIPE_NAMES, Panel, plot_runs
from vlm_r1.rollout_images import MIN_ROLLOUT_WIDTH, draw_rollout
from vlm_r1.tracking import read_jsonl

#: Curves are shown at this width (drawn larger, ``plots.PANEL_DPI``, for dense screens).
PANEL_WIDTH = 420

CSS = f"""body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}h1{{font-size:22px}}
h2{{font-size:18px;margin-top:28px}}h3{{font-size:16px;margin:20px 0 6px}}
h4{{font-size:14px;margin:16px 0 6px;color:#444}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}
.panels{{display:flex;flex-wrap:wrap;gap:10px}}
.panel{{margin:0;width:{PANEL_WIDTH}px;border:1px solid #eee;padding:4px}}
.panel img{{display:block;width:{PANEL_WIDTH}px;height:auto}}
.panel figcaption{{font-size:12px;color:#444;margin-top:2px;line-height:1.35}}
.gallery{{display:flex;flex-wrap:wrap;align-items:flex-start}}
.card{{width:min-content;min-width:{MIN_ROLLOUT_WIDTH}px;margin:6px;font-size:11px;
border:1px solid #ddd;padding:4px}}
.card img{{display:block;max-width:{2 * MIN_ROLLOUT_WIDTH}px;height:auto}}
.card img.pixels{{image-rendering:pixelated}}
.card pre{{white-space:pre-wrap;word-break:break-all;max-height:90px;overflow:auto}}
.note{{color:#555;font-size:13px}}"""


def _data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def _file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _rollout_rows(run: Path, per_step: int = 4, steps: int = 3) -> list[dict[str, Any]]:
    files = sorted((run / "rollouts").glob("step_*_rank0.jsonl"))
    if not files:
        return []
    chosen = [files[0], files[len(files) // 2], files[-1]][:steps] if len(files) >= 3 else files
    rows = []
    for path in dict.fromkeys(chosen):
        group = read_jsonl(path)
        rows.extend(group[:: max(1, len(group) // per_step)][:per_step])
    return rows


def _eval_table(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "<p class='note'>No evaluation results.</p>"
    cells = []
    for model, splits in metrics.items():
        for split, tasks in splits.items():
            for task, values in tasks.items():
                if task.startswith("_"):
                    continue
                shown = ", ".join(
                    f"{k} {v:.3f}"
                    for k, v in values.items()
                    if isinstance(v, float) and k not in ("predictions",)
                )
                cells.append(
                    f"<tr><td style='text-align:left'>{html.escape(model)}</td><td>{html.escape(split)}"
                    f"</td><td>{html.escape(task)}</td><td style='text-align:left'>{shown}</td></tr>"
                )
    return (
        "<table><tr><th>model</th><th>split</th><th>task</th><th>metrics</th></tr>"
        + "".join(cells)
        + "</table>"
    )


CURVES_NOTE = (
    "Faint: the value logged at each step; solid: its exponential moving average (debiased, "
    "as TensorBoard smooths). A gap is a step where the metric was undefined. Under each "
    "panel: what a healthy run looks like."
)


def _panels_html(panels: list[Panel]) -> str:
    """Panels grouped by recipe (runs of one recipe overlaid), the primary ones first, each a
    figure with its healthy-run line as the caption."""
    if not panels:
        return "<p class='note'>No metrics logged.</p>"
    parts = [f"<p class='note'>{html.escape(CURVES_NOTE)}</p>"]
    recipes = list(dict.fromkeys(p.recipe for p in panels))
    for recipe in recipes:
        mine = [p for p in panels if p.recipe == recipe]
        name = RECIPE_NAMES.get(recipe, recipe)
        runs = ", ".join(mine[0].runs)
        parts.append(
            f"<section class='recipe' data-recipe='{html.escape(recipe)}'>"
            f"<h3>{html.escape(name)} ({html.escape(runs)})</h3>"
        )
        for primary, heading in ((True, ""), (False, f"More {name} signals")):
            group = [p for p in mine if p.primary == primary]
            if not group:
                continue
            if heading:
                parts.append(f"<h4>{html.escape(heading)}</h4>")
            parts.append("<div class='panels'>" + "".join(_figure(p) for p in group) + "</div>")
        parts.append("</section>")
    return "".join(parts)


def _figure(panel: Panel) -> str:
    alt = html.escape(f"{RECIPE_NAMES.get(panel.recipe, panel.recipe)}: {panel.title}")
    caption = f"<figcaption>{html.escape(panel.caption)}</figcaption>" if panel.caption else ""
    src = _file_uri(panel.path) if panel.path is not None else ""
    return f"<figure class='panel'><img alt='{alt}' src='{src}'>{caption}</figure>"


def build_report(
    runs: dict[str, Path],
    out: Path,
    eval_metrics: dict[str, Any] | None = None,
    title: str = "vlm-r1 report",
    notes: list[str] | None = None,
) -> Path:
    """Write ``out`` (HTML) and the PNG plots beside it; returns the HTML path."""
    out = Path(out)
    plot_dir = out.parent / f"{out.stem}_plots"
    panels = plot_runs(runs, plot_dir)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    for note in notes or []:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    parts.append("<h2>Evaluation</h2>" + _eval_table(eval_metrics or {}))
    parts.append("<h2>Training curves</h2>" + _panels_html(panels))
    for name, run in runs.items():
        rows = _rollout_rows(Path(run))
        if not rows:
            continue
        parts.append(
            f"<h2>Rollouts: {html.escape(name)}</h2><p class='note'>green: ground truth, red: "
            "the completion's boxes (mapped from the model's coordinate system)</p><div class='gallery'>"
        )
        for row in rows:
            image = draw_rollout(row)
            rewards = ", ".join(f"{k} {v:.2f}" for k, v in row.get("rewards", {}).items())
            img = ""
            if image is not None:
                # Shown at its own size; where a dense screen scales it, keep the pixels sharp.
                sharp = " class='pixels'" if image.width <= 2 * MIN_ROLLOUT_WIDTH else ""
                img = f"<img alt='rollout'{sharp} src='{_data_uri(image)}'>"
            parts.append(
                f"<div class='card'>{img}<div>step {row['step']} &middot; reward {row['reward']:.2f} "
                f"({html.escape(rewards)})</div><div>{html.escape(row.get('question', ''))}</div>"
                f"<pre>{html.escape(row.get('completion', ''))}</pre></div>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
