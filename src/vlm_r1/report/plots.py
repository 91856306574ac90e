"""Metric curves with matplotlib (Agg backend), several runs overlaid, written as PNG."""

from __future__ import annotations

import math
from pathlib import Path

from vlm_r1.tracking import read_jsonl

PANELS = (
    ("reward", ("reward",), "total reward"),
    ("rewards", ("reward/",), "reward terms"),
    ("kl", ("kl",), "KL to reference"),
    ("length", ("completion_length",), "completion length (tokens)"),
    ("format", ("monitor/format_pass",), "strict format pass rate"),
    (
        "hacking",
        ("monitor/empty_answer_rate", "monitor/whole_image_box_rate", "monitor/duplicate_box_rate"),
        "hacking monitors",
    ),
    ("boxes", ("monitor/pred_gt_box_ratio",), "predicted / gt boxes"),
    ("spread", ("monitor/centre_spread_ratio",), "box-centre spread / true spread (REC)"),
    ("aha", ("monitor/recheck_rate",), "re-checking in <think>"),
    ("why0", ("monitor/why0/",), "why accuracy was 0"),
    ("loss", ("loss",), "loss"),
)


def read_history(run: Path) -> list[dict[str, float]]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    return read_jsonl(path)


def _matching(history: list[dict[str, float]], prefixes: tuple[str, ...]) -> list[str]:
    keys = sorted({k for row in history for k in row})
    return [
        k for k in keys if any(k == p or (p.endswith("/") and k.startswith(p)) for p in prefixes)
    ]


def plot_runs(runs: dict[str, Path], out_dir: Path) -> list[Path]:
    """One PNG per panel with data; every run (and every matching key) is one line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histories = {name: read_history(path) for name, path in runs.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for slug, prefixes, title in PANELS:
        fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=100)
        lines = 0
        for name, history in histories.items():
            for key in _matching(history, prefixes):
                # NaN = undefined at that step (e.g. box monitors on a text-only batch).
                points = [
                    (row["step"], row[key])
                    for row in history
                    if key in row and math.isfinite(row[key])
                ]
                if points:
                    label = (
                        name
                        if len(prefixes) == 1 and not prefixes[0].endswith("/")
                        else f"{name}: {key}"
                    )
                    ax.plot(*zip(*points, strict=True), label=label, linewidth=1.4)
                    lines += 1
        if lines:
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out_dir / f"{slug}.png"
            fig.savefig(path)
            written.append(path)
        plt.close(fig)
    return written
