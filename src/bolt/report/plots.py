"""Figures of a run's metrics (matplotlib, headless), for ``bolt demo`` and ``bolt report``.

Each takes the ``summary_table`` of ``bolt.report.tables`` (error bars: standard deviations over
seeds) and returns whether it had the metrics to draw anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from bolt.report.tables import BASELINES, Table


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _iterations(table: Table) -> list[str]:
    numbers = sorted(int(m[1]) for name in table if (m := re.fullmatch(r"em_(\d+)", name)))
    return (["warm_start"] if "warm_start" in table else []) + [f"em_{i}" for i in numbers]


def plot_per_iteration(table: Table, path: Path) -> bool:
    """Accuracy and likelihood per EM iteration, raw-data baselines as horizontal lines."""
    names = _iterations(table)
    panels = [
        (metric, label)
        for metric, label in (
            ("accuracy", "held-out accuracy"),
            ("nll_per_token", "NLL / token"),
            ("iwae_per_token", "IWAE NLL bound / token"),
        )
        if any(metric in table[n] for n in names)
    ]
    if not names or not panels:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (metric, label) in zip(axes[0], panels):
        present = [(i, n) for i, n in enumerate(names) if metric in table[n]]
        axis.errorbar(
            [i for i, _ in present],
            [table[n][metric]["mean"] for _, n in present],
            yerr=[table[n][metric]["std"] for _, n in present],
            marker="o",
            capsize=3,
            label="latent model",
        )
        for baseline, style in zip(BASELINES, ("--", ":", "-.", (0, (1, 4)), (0, (5, 2, 1, 2)), (0, (3, 1)))):
            if baseline in table and metric in table[baseline]:
                axis.axhline(table[baseline][metric]["mean"], linestyle=style, color="grey", label=baseline)
        axis.set_xticks(range(len(names)), [n.replace("_", " ") for n in names])
        axis.set_ylabel(label)
        axis.legend(fontsize=7)
    figure.suptitle("Per EM iteration (error bars: std over seeds)")
    _save(plt, figure, path)
    return True


def plot_against(table: Table, x_metric: str, xlabel: str, path: Path) -> bool:
    """Accuracy of every model against raw tokens seen, training tokens (FLOPs at a fixed model size) or similar."""
    names = [n for n in table if x_metric in table[n] and "accuracy" in table[n]]
    if not names:
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for name in names:
        axis.errorbar(
            [table[name][x_metric]["mean"]],
            [table[name]["accuracy"]["mean"]],
            yerr=[table[name]["accuracy"]["std"]],
            marker="s" if name in BASELINES else "o",
            capsize=3,
            linestyle="none",
            label=name,
        )
    axis.set_xscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("held-out accuracy")
    axis.legend(fontsize=7)
    _save(plt, figure, path)
    return True


def plot_against_k(table: Table, k_info: dict, path: Path) -> bool:
    """Accuracy of the iteration-1 model against the E-step's K (``em_1_k{K}``; ``em_1`` has the run's default K)."""
    points = {int(m[1]): name for name in table if (m := re.fullmatch(r"em_1_k(\d+)", name))}
    if k_info.get("samples") and "em_1" in table:
        points.setdefault(int(k_info["samples"]), "em_1")
    points = {k: n for k, n in points.items() if "accuracy" in table[n]}
    if len(points) < 2:
        return False
    ks = sorted(points)
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.errorbar(
        ks,
        [table[points[k]]["accuracy"]["mean"] for k in ks],
        yerr=[table[points[k]]["accuracy"]["std"] for k in ks],
        marker="o",
        capsize=3,
    )
    axis.set_xscale("log", base=2)
    axis.set_xlabel("Monte Carlo samples K in the E-step")
    axis.set_ylabel("held-out accuracy of the next model")
    _save(plt, figure, path)
    return True


def plot_tasks(table: Table, path: Path) -> bool:
    """Benchmark accuracy (``<task>/exact_match``) per model, grouped by task."""
    tasks = sorted(
        {metric.split("/")[0] for entry in table.values() for metric in entry if metric.endswith("/exact_match")}
    )
    names = [n for n in table if any(f"{t}/exact_match" in table[n] for t in tasks)]
    if not tasks:
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(5, 1.5 * len(tasks) * len(names) ** 0.5), 4))
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        stats = [table[name].get(f"{t}/exact_match", {"mean": np.nan, "std": 0.0}) for t in tasks]
        axis.bar(
            np.arange(len(tasks)) + index * width,
            [s["mean"] for s in stats],
            width,
            yerr=[s["std"] for s in stats],
            capsize=3,
            label=name,
        )
    axis.set_xticks(np.arange(len(tasks)) + width * (len(names) - 1) / 2, tasks, rotation=20, fontsize=8)
    axis.set_ylabel("accuracy (exact match)")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=7)
    _save(plt, figure, path)
    return True


def _save(plt, figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_plots(table: Table, k_info: dict, output: Path, names: dict[str, str] | None = None) -> list[str]:
    """Every figure the metrics allow, into ``output``; ``names`` renames the files (figure -> file
    name). Returns the file names written."""
    names = {**FILES, **(names or {})}
    made = {
        names["per_iteration"]: plot_per_iteration(table, output / names["per_iteration"]),
        names["raw_tokens"]: plot_against(
            table, "raw_tokens_seen", "raw tokens seen in training", output / names["raw_tokens"]
        ),
        names["train_tokens"]: plot_against(
            table, "train_tokens", "training tokens (FLOPs at a fixed model size)", output / names["train_tokens"]
        ),
        names["k"]: plot_against_k(table, k_info, output / names["k"]),
        names["tasks"]: plot_tasks(table, output / names["tasks"]),
    }
    return sorted(name for name, drawn in made.items() if drawn)


FILES = {
    "per_iteration": "per_iteration.png",
    "raw_tokens": "accuracy_vs_raw_tokens.png",
    "train_tokens": "accuracy_vs_train_tokens.png",
    "k": "accuracy_vs_k.png",
    "tasks": "tasks.png",
}
"""The figures of ``write_plots`` and their default file names."""
