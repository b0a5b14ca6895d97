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
paper's claims are computed again (``bolt.report.claims``: paired differences per seed, 95%
intervals, verdicts) into ``claims`` of ``report.json`` and the end of ``report.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

from bolt.core.records import atomic_path, write_json
from bolt.core.rundir import RunDir, check_parent_directories
from bolt.errors import BoltError
from bolt.report import claims
from bolt.report.plots import write_plots
from bolt.report.tables import Models, markdown, numeric, summary_table

TASK_COUNTS = ("questions", "samples_per_question")
"""Entries of tasks.json that describe a task run rather than measure the model."""


def _add(models: Models, name: str, metrics: dict) -> None:
    for key, value in metrics.items():
        if numeric(value):
            values = value if isinstance(value, list) else [value]
            models.setdefault(name, {}).setdefault(key, []).extend(float(v) for v in values)


def demo_claims(run_dirs: list[Path]) -> dict | None:
    """The claims (``bolt.report.claims``) over the seeds of every ``bolt demo`` run given, paired within
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
    table = summary_table(models)
    output.mkdir(parents=True, exist_ok=True)
    plots = write_plots(table, k_info, output)
    verdicts = demo_claims([Path(r) for r in run_dirs])
    result = {
        "runs": [str(r) for r in run_dirs],
        "models": table,
        "claims": verdicts,
        "plots": plots,
    }
    write_json(output / "report.json", result)
    with atomic_path(output / "report.md") as temporary:
        temporary.write_text(markdown(table) + ("\n" + claims.markdown(verdicts) if verdicts else ""), encoding="utf-8")
    run.finish(models=len(table), plots=result["plots"])
    return result
