"""PNG plots of a demo's results (matplotlib, headless).

Input is the ``models`` mapping of ``results.json``: model name -> per-seed lists.
Error bars are standard deviations over seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RAW_BASELINES = ("raw_warm", "raw_token_matched", "raw_flops_matched", "wrap", "wrap_cot")


def _stats(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, axis, title: str, path: Path, ylabel: str = "held-out accuracy") -> None:
    axis.set_ylabel(ylabel)
    axis.set_ylim(0, 1)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def accuracy_per_iteration(models: dict, path: Path) -> None:
    plt = _pyplot()
    iterations = sorted(int(name.split("_")[1]) for name in models if name.startswith("em_") and name.count("_") == 1)
    names = ["warm_start"] + [f"em_{i}" for i in iterations]
    means, stds = zip(*(_stats(models[name]["accuracy"]) for name in names))
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.errorbar(range(len(names)), means, yerr=stds, marker="o", capsize=3, label="BoLT (latent model)")
    for name, style in zip(RAW_BASELINES, ("--", ":", "-.", (0, (1, 4)), (0, (5, 2, 1, 2)))):
        if name in models:
            mean, _ = _stats(models[name]["accuracy"])
            axis.axhline(mean, linestyle=style, color="grey", label=name)
    axis.set_xticks(range(len(names)), ["warm start"] + [f"EM {i}" for i in iterations])
    axis.legend(fontsize=8)
    _save(plt, figure, axis, "Bootstrapping latent thoughts", path)


def accuracy_against_k(models: dict, ks: list[int], path: Path, default_k: int) -> None:
    plt = _pyplot()
    names = [f"em_1_k{k}" if k != default_k else "em_1" for k in ks]
    present = [(k, name) for k, name in zip(ks, names) if name in models]
    means, stds = zip(*(_stats(models[name]["accuracy"]) for _, name in present))
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.errorbar([k for k, _ in present], means, yerr=stds, marker="o", capsize=3)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("Monte Carlo samples K in the E-step")
    _save(plt, figure, axis, "E-step inference compute", path, ylabel="held-out accuracy of the next model")


def data_efficiency(models: dict, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, entry in models.items():
        tokens, _ = _stats(entry["raw_tokens_seen"])
        mean, std = _stats(entry["accuracy"])
        marker = "s" if name in RAW_BASELINES else "o"
        axis.errorbar([tokens], [mean], yerr=[std], marker=marker, capsize=3, linestyle="none", label=name)
    axis.set_xscale("log")
    axis.set_xlabel("raw tokens seen in training")
    axis.legend(fontsize=7)
    _save(plt, figure, axis, "Data efficiency", path)
