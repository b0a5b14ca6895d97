"""`bolt report`: pooling runs into tables and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bolt.errors import BoltError
from bolt.report.stage import report

PNG = b"\x89PNG\r\n\x1a\n"


def demo_results(directory: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ["raw_warm", "warm_start", "em_1", "em_2", "em_1_k1", "raw_token_matched", "raw_flops_matched"]
    models = {}
    for index, name in enumerate(names):
        entry = {
            "accuracy": [float(rng.uniform(0, 1))],
            "nll_per_token": [float(rng.uniform(1, 2))],
            "train_tokens": [1000.0 * (index + 1)],
            "raw_tokens_seen": [500.0 * (index + 1)],
            "train_seconds": [None],
        }
        if not name.startswith("raw"):
            entry["iwae_per_token"] = [float(rng.uniform(1, 2))]
        models[name] = entry
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(
        json.dumps({"models": models, "seeds": 1, "config": {"samples": 4, "sweep": [1, 4]}})
    )


def test_report_pools_seeds_and_draws_every_plot(tmp_path):
    runs = [tmp_path / "demo-0", tmp_path / "demo-1"]
    for seed, run in enumerate(runs):
        demo_results(run, seed)
    evaluation = tmp_path / "warm-eval"
    evaluation.mkdir()
    (evaluation / "tasks.json").write_text(
        json.dumps(
            {
                "gsm8k_cot": {"exact_match": 0.25, "exact_match_stderr": 0.1, "questions": 4},
                "world_latent": {"exact_match": 0.5},
            }
        )
    )
    (evaluation / "eval.json").write_text(json.dumps({"model": "m", "nll_per_token": 1.5, "accuracy": 0.4}))

    result = report([*runs, evaluation], tmp_path / "report")
    table = result["models"]
    for name in ("warm_start", "em_1", "raw_warm"):
        values = [json.loads((run / "results.json").read_text())["models"][name]["accuracy"][0] for run in runs]
        assert table[name]["accuracy"]["mean"] == pytest.approx(np.mean(values))
        assert table[name]["accuracy"]["std"] == pytest.approx(np.std(values, ddof=1))
        assert table[name]["accuracy"]["n"] == 2
    assert "train_seconds" not in table["em_1"]  # non-numbers are left out
    assert (
        table["warm-eval"]["gsm8k_cot/exact_match"]["mean"] == 0.25
        and "gsm8k_cot/exact_match_stderr" not in table["warm-eval"]
    )
    assert "gsm8k_cot/questions" not in table["warm-eval"]
    assert table["warm-eval"]["accuracy"]["n"] == 1

    assert result["plots"] == sorted(
        [
            "per_iteration.png",
            "accuracy_vs_raw_tokens.png",
            "accuracy_vs_train_tokens.png",
            "accuracy_vs_k.png",
            "tasks.png",
        ]
    )
    for name in result["plots"]:
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG)
    text = (tmp_path / "report" / "report.md").read_text()
    markdown = text.split("\n\n")[0].splitlines()
    assert markdown[0].startswith("| model |") and len(markdown) == 2 + len(table)
    assert markdown[2].startswith("| raw_warm |") and "(n=2)" in markdown[2]
    assert json.loads((tmp_path / "report" / "report.json").read_text())["models"] == table
    assert json.loads((tmp_path / "report" / "manifest.json").read_text())["status"] == "complete"
    # the claims, paired within each run's seed; an eval-only run takes no part
    accuracy = {
        name: [json.loads((run / "results.json").read_text())["models"][name]["accuracy"][0] for run in runs]
        for name in ("warm_start", "raw_warm")
    }
    first = result["claims"]["1"]["comparisons"][0]
    assert (first["higher"], first["lower"]) == ("warm_start", "raw_warm")
    assert first["differences"] == pytest.approx([w - r for w, r in zip(accuracy["warm_start"], accuracy["raw_warm"])])
    assert "### Claim 1:" in text and "### Claim 3:" in text


def test_em_results_become_iterations(tmp_path):
    run = tmp_path / "em"
    run.mkdir()
    rows = [
        {"iteration": 0, "data": "teacher latents", "accuracy": 0.2, "nll_per_token": 2.0},
        {"iteration": 1, "data": "E-step, K=2", "accuracy": 0.3, "nll_per_token": 1.9},
    ]
    (run / "results.json").write_text(json.dumps(rows))
    result = report([run], tmp_path / "out")
    assert list(result["models"]) == ["warm_start", "em_1"]
    assert result["models"]["em_1"]["accuracy"]["mean"] == 0.3
    assert result["plots"] == ["per_iteration.png"]
    assert result["claims"] is None, "no demo run, no claims"


def test_a_directory_without_results_is_an_error(tmp_path):
    with pytest.raises(BoltError, match=r"no results.json"):
        report([tmp_path], tmp_path / "out")
