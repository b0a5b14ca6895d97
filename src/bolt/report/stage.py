"""``bolt report``: metrics of several runs in one Markdown/JSON table, with plots.

Reads, from each run directory given:

- ``results.json`` of ``bolt demo`` (``models`` -> name -> metric -> one value per seed);
- ``results.json`` of ``bolt em`` (one row per iteration: iteration 0 is ``warm_start``,
  iteration i is ``em_i``);
- ``tasks.json`` and ``eval.json`` of ``bolt eval`` (the model is named after the run
  directory; task metrics become ``<task>/<metric>``);
- ``finetune_eval.json`` of ``bolt finetune-eval`` (named after its directory too; its per-seed
  values become ``finetune/<task>/<metric>``).

Runs that hold the same model (several seeds of a demo, say) pool their values. Tables
show mean ± standard deviation over the pooled values (n of them); the plots' error bars
are the same standard deviations. Over the seeds of the ``bolt demo`` runs given, the
paper's claims are computed again (``bolt.apps.report.claims``: paired differences per seed, 95%
intervals, verdicts) into ``claims`` of ``report.json`` and the end of ``report.md``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from bolt.apps.report import claims
from bolt.errors import BoltError
from bolt.core.records import atomic_path, write_json
from bolt.core.rundir import RunDir, check_parent_directories

Models = dict[str, dict[str, list[float]]]
BASELINES = ("raw_warm", "raw_token_matched", "raw_flops_matched", "wrap", "wrap_cot", "warm_long")
TASK_COUNTS = ("questions", "samples_per_question")
"""Entries of tasks.json that describe a task run rather than measure the model."""
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


def _add(models: Models, name: str, metrics: dict) -> None:
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            models.setdefault(name, {}).setdefault(key, []).extend(float(v) for v in values)


def demo_claims(run_dirs: list[Path]) -> dict | None:
    """The claims (``bolt.apps.report.claims``) over the seeds of every ``bolt demo`` run given, paired within
    each seed; only models that every one of those runs trained take part. None without a demo run."""
    runs = []
    for run in run_dirs:
        path = Path(run) / "results.json"
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        if isinstance(data, dict) and "models" in data:
            runs.append(data)
    if not runs:
        return None
    common = set.intersection(*(set(r["models"]) for r in runs))
    pooled: Models = {name: {} for name in common}
    for r in runs:
        for name in common:
            for metric, values in r["models"][name].items():
                pooled[name].setdefault(metric, []).extend(values)
    config = runs[0].get("config", {})
    loop = config.get("loop", config)
    return claims.demo_claims(pooled, int(loop.get("samples", 0)), list(config.get("sweep", [])))


def collect(run_dirs: list[Path]) -> tuple[Models, dict]:
    """Every model's metrics over all runs, and what the runs say about K (``samples``, ``sweep``)."""
    models: Models = {}
    k_info: dict = {}
    for run in run_dirs:
        found = False
        results = run / "results.json"
        if results.is_file():
            data = json.loads(results.read_text(encoding="utf-8"))
            if isinstance(data, dict) and "models" in data:
                for name, metrics in data["models"].items():
                    _add(models, name, metrics)
                config = data.get("config", {})
                loop = config.get("loop", config)  # a results.json without a "loop" block keeps samples at the top
                k_info = {
                    "samples": loop.get("samples", k_info.get("samples")),
                    "sweep": config.get("sweep", k_info.get("sweep")),
                }
            elif isinstance(data, list):
                for row in data:
                    _add(models, "warm_start" if row.get("iteration") == 0 else f"em_{row.get('iteration')}", row)
            else:
                raise BoltError(f"{results}: neither a `bolt demo` nor a `bolt em` results.json.")
            found = True
        if (run / "tasks.json").is_file():
            tasks = json.loads((run / "tasks.json").read_text(encoding="utf-8"))
            _add(
                models,
                run.name,
                {
                    f"{task}/{metric}": value
                    for task, entry in tasks.items()
                    for metric, value in entry.items()
                    if not metric.endswith("_stderr") and metric not in TASK_COUNTS
                },
            )
            found = True
        if (run / "eval.json").is_file():
            _add(models, run.name, json.loads((run / "eval.json").read_text(encoding="utf-8")))
            found = True
        if (run / "finetune_eval.json").is_file():
            tuned = json.loads((run / "finetune_eval.json").read_text(encoding="utf-8"))
            _add(
                models,
                run.name,
                {
                    f"finetune/{tuned['task']}/{metric}": entry["values"]
                    for metric, entry in tuned.items()
                    if isinstance(entry, dict) and "values" in entry
                },
            )
            found = True
        if not found:
            raise BoltError(
                f"{run}: no results.json (bolt demo / bolt em), tasks.json or eval.json (bolt eval) "
                "or finetune_eval.json (bolt finetune-eval) to report on."
            )
    return models, k_info


def summarize(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "stderr": std / np.sqrt(len(array)), "n": len(array)}


def _order(models: Models) -> list[str]:
    return [n for n in ORDER if n in models] + sorted(n for n in models if n not in ORDER)


def _cell(stats: dict | None) -> str:
    if stats is None:
        return ""
    mean = stats["mean"]
    text = f"{mean:,.0f}" if abs(mean) >= 1000 else f"{mean:.3f}"
    return text if stats["n"] == 1 else f"{text} ± {stats['std']:.3f} (n={stats['n']})"


def markdown(table: dict[str, dict[str, dict]]) -> str:
    metrics = sorted({metric for entry in table.values() for metric in entry})
    lines = ["| model | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name in table:
        lines.append(f"| {name} | " + " | ".join(_cell(table[name].get(m)) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _iterations(models: Models) -> list[str]:
    numbers = sorted(int(m[1]) for name in models if (m := re.fullmatch(r"em_(\d+)", name)))
    return (["warm_start"] if "warm_start" in models else []) + [f"em_{i}" for i in numbers]


def plot_per_iteration(models: Models, table: dict, path: Path) -> bool:
    """Accuracy and likelihood per EM iteration, raw-data baselines as horizontal lines."""
    names = _iterations(models)
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


def plot_against(models: Models, table: dict, x_metric: str, xlabel: str, path: Path) -> bool:
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


def plot_against_k(table: dict, k_info: dict, path: Path) -> bool:
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


def plot_tasks(table: dict, path: Path) -> bool:
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


def report(run_dirs: list[Path], output: Path) -> dict:
    """``bolt report``: ``OUT/report.json``, ``OUT/report.md`` and the plots that the runs' metrics allow."""
    if not run_dirs:
        raise BoltError("give at least one run directory.")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise BoltError(
            f"{output}: is a file; -o names the output directory of `bolt report` (report.md, report.json, plots)."
        )
    check_parent_directories(output)
    run = RunDir(output)
    run.start("report", {"runs": [str(r) for r in run_dirs]})
    models, k_info = collect([Path(r) for r in run_dirs])
    table = {name: {metric: summarize(values) for metric, values in models[name].items()} for name in _order(models)}
    output.mkdir(parents=True, exist_ok=True)
    plots = {
        "per_iteration.png": plot_per_iteration(models, table, output / "per_iteration.png"),
        "accuracy_vs_raw_tokens.png": plot_against(
            models, table, "raw_tokens_seen", "raw tokens seen in training", output / "accuracy_vs_raw_tokens.png"
        ),
        "accuracy_vs_train_tokens.png": plot_against(
            models,
            table,
            "train_tokens",
            "training tokens (FLOPs at a fixed model size)",
            output / "accuracy_vs_train_tokens.png",
        ),
        "accuracy_vs_k.png": plot_against_k(table, k_info, output / "accuracy_vs_k.png"),
        "tasks.png": plot_tasks(table, output / "tasks.png"),
    }
    verdicts = demo_claims([Path(r) for r in run_dirs])
    result = {
        "runs": [str(r) for r in run_dirs],
        "models": table,
        "claims": verdicts,
        "plots": sorted(name for name, made in plots.items() if made),
    }
    write_json(output / "report.json", result)
    with atomic_path(output / "report.md") as temporary:
        temporary.write_text(markdown(table) + ("\n" + claims.markdown(verdicts) if verdicts else ""), encoding="utf-8")
    run.finish(models=len(table), plots=result["plots"])
    return result
