"""Print evaluation metrics as a table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

HEADLINE = {
    "rec": ("acc@0.5", "miou"),
    "ovd": ("mAP", "AP50", "AR100"),
    "count": ("accuracy",),
    "qa": ("accuracy",),
    "point": ("acc", "mean_distance"),
}


def print_metrics(metrics: dict[str, Any], title: str = "evaluation") -> None:
    table = Table(title=title)
    for column in ("task", "n", "metric", "value", "format failures"):
        table.add_column(column)
    for task, values in metrics.items():
        if task.startswith("_"):
            continue
        for name in HEADLINE.get(task, ()):
            table.add_row(
                task,
                str(values.get("n", "")),
                name,
                f"{values.get(name, float('nan')):.4f}",
                f"{values.get('format_failure_rate', 0.0):.1%}",
            )
    Console().print(table)


def throughput_line(metrics: dict[str, Any]) -> str | None:
    """``"12.3 samples/s, 456 generated tokens/s (...)"`` from ``_meta``, if it was measured."""
    meta = metrics.get("_meta", {})
    rate = meta.get("throughput")
    if not rate:
        return None
    tokens = rate.get("generated_tokens_per_s")
    where = ", ".join(
        str(part)
        for part in (
            f"{rate['processes']} process" + ("es" if rate["processes"] != 1 else ""),
            meta.get("backend"),
            meta.get("device"),
            meta.get("dtype"),
        )
        if part
    )
    return (
        f"throughput: {rate['samples_per_s']:.2f} samples/s"
        + (f", {tokens:.1f} generated tokens/s" if tokens is not None else "")
        + f" over {rate['seconds']:.1f} s of generation ({where})"
    )


def print_throughput(metrics: dict[str, Any]) -> None:
    line = throughput_line(metrics)
    if line:
        Console().print(line)
