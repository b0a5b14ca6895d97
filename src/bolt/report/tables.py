"""Per-seed statistics and Markdown tables, shared by ``bolt demo``, ``bolt em``, ``bolt finetune-eval``
and ``bolt report``.

A run's metrics come as ``models``: model name -> metric -> one value per seed (or per pooled
run). ``summary_table`` turns that into mean, standard deviation, standard error and n per
metric; ``markdown`` prints it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Models = dict[str, dict[str, list[float]]]
Table = dict[str, dict[str, dict]]

BASELINES = ("raw_warm", "raw_token_matched", "raw_flops_matched", "wrap", "wrap_cot", "warm_long")
"""Models that are not the EM chain: plotted as reference lines and squares."""
ORDER = [
    "raw_warm",
    "warm_start",
    "warm_long",
    "em_1",
    "em_2",
    "em_3",
    "raw_token_matched",
    "raw_flops_matched",
    "wrap",
    "wrap_cot",
]
"""The rows' order in every table: the chain between the baselines; other models follow by name."""


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), standard error of the mean, and n."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "stderr": std / math.sqrt(len(array)), "n": len(array)}


def numeric(values) -> bool:
    """A number, or a non-empty list of numbers (booleans are not)."""
    values = values if isinstance(values, list) else [values]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def model_order(names) -> list[str]:
    return [n for n in ORDER if n in names] + sorted(n for n in names if n not in ORDER)


def summary_table(models: Models) -> Table:
    """``summarize`` of every numeric metric of every model, rows in ``ORDER``; a metric with a
    missing (None) value for some seed is left out of that model's row."""
    return {
        name: {metric: summarize(values) for metric, values in models[name].items() if numeric(values)}
        for name in model_order(models)
    }


def cell(stats: dict | None) -> str:
    """``mean`` (``1,234`` from 1,000 up, else 3 decimals), with ``± std (n=N)`` over several values."""
    if stats is None:
        return ""
    mean = stats["mean"]
    text = f"{mean:,.0f}" if abs(mean) >= 1000 else f"{mean:.3f}"
    return text if stats["n"] == 1 else f"{text} ± {stats['std']:.3f} (n={stats['n']})"


def markdown(table: Table, columns: Sequence[tuple[str, str]] | None = None) -> str:
    """One row per model; ``columns`` as (metric, title) pairs, by default every metric by name."""
    if columns is None:
        columns = [(metric, metric) for metric in sorted({metric for entry in table.values() for metric in entry})]
    lines = ["| model | " + " | ".join(title for _, title in columns) + " |", "|---|" + "---|" * len(columns)]
    for name in table:
        lines.append(f"| {name} | " + " | ".join(cell(table[name].get(metric)) for metric, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def rows_markdown(rows: list[dict], columns: Sequence[str]) -> str:
    """A table of records (``bolt em``'s iterations): the given columns that any row has, floats to 4 decimals."""
    present = [c for c in columns if any(c in row for row in rows)]
    lines = ["| " + " | ".join(present) + " |", "|" + "---|" * len(present)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in present]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
