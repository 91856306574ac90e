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
