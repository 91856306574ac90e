"""One self-contained HTML report: plots, the evaluation table and a rollout gallery, with
every image embedded (base64), so the file can be mailed or opened anywhere."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from vlm_r1.models.boxes import BoxSpace, from_model
from vlm_r1.parsing import extract_answer, parse_boxes
from vlm_r1.report.plots import plot_runs
from vlm_r1.rewards.common import gt_boxes
from vlm_r1.tracking import read_jsonl

CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}h1{font-size:22px}
h2{font-size:18px;margin-top:28px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}.plots img{margin:4px;border:1px solid #eee}.gallery{display:flex;
flex-wrap:wrap}.card{width:240px;margin:6px;font-size:11px;border:1px solid #ddd;padding:4px}
.card img{width:232px}.card pre{white-space:pre-wrap;word-break:break-all;max-height:90px;overflow:auto}
.note{color:#555;font-size:13px}"""


def _data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def _file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def draw_rollout(row: dict[str, Any]) -> Image.Image | None:
    """The rollout's first image with the ground truth (green) and predicted (red) boxes."""
    if not row.get("images"):
        return None
    try:
        image = Image.open(row["images"][0]).convert("RGB")
    except OSError:
        return None
    draw = ImageDraw.Draw(image)
    truth, _ = gt_boxes(row.get("solution", ""))
    for box in truth:
        draw.rectangle([float(v) for v in box], outline=(0, 170, 0), width=2)
    space = row.get("box_space")
    predicted = parse_boxes(extract_answer(row.get("completion", "")).answer)
    if predicted.boxes:
        coords = [b.box for b in predicted.boxes]
        if space:
            bs = BoxSpace(
                space["system"],
                tuple(space["original_size"]),
                tuple(space["model_size"]) if space.get("model_size") else None,
            )
            coords = from_model(coords, bs).tolist()
        for box in coords[:50]:
            x1, y1, x2, y2 = box
            draw.rectangle(
                [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=(220, 0, 0), width=2
            )
    return image


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
    plots = plot_runs(runs, plot_dir)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    for note in notes or []:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    parts.append("<h2>Evaluation</h2>" + _eval_table(eval_metrics or {}))
    parts.append("<h2>Training curves</h2><div class='plots'>")
    parts.extend(f"<img alt='{p.stem}' src='{_file_uri(p)}'>" for p in plots)
    parts.append("</div>")
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
            img = f"<img alt='rollout' src='{_data_uri(image)}'>" if image is not None else ""
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
