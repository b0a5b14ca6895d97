"""The paper recipe's data preparation (the download itself needs network and is not run here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "configs" / "paper" / "prepare_finemath.py"


def _module():
    spec = importlib.util.spec_from_file_location("prepare_finemath", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_splits_are_disjoint_in_order_and_fill_their_budgets(tmp_path):
    prepare = _module()
    documents = [(f"d{i}", "word " * (i % 7 + 1)) for i in range(100)]
    splits = (("heldout", "documents", 5), ("warm", "tokens", 40), ("bootstrap", "tokens", 10_000))
    totals = prepare.write_splits(documents, lambda text: len(text.split()), tmp_path, splits)

    read = {
        name: [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        for name, _, _ in splits
    }
    assert [row["id"] for name in ("heldout", "warm", "bootstrap") for row in read[name]] == [d for d, _ in documents]
    assert len(read["heldout"]) == 5 == totals["heldout"]["documents"]
    warm_tokens = sum(len(row["text"].split()) for row in read["warm"])
    assert warm_tokens == totals["warm"]["tokens"] >= 40
    assert warm_tokens - len(read["warm"][-1]["text"].split()) < 40  # stops at the first document over budget
    assert totals["bootstrap"]["documents"] == 100 - 5 - len(read["warm"])  # the stream ran out first
    assert not list(tmp_path.glob("*.tmp"))


# --- configs/paper/recipe.sh ----------------------------------------------------------------

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

RECIPE = SCRIPT.parent / "recipe.sh"
ROOT = SCRIPT.parents[2]


def _recipe(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # this venv's bolt and python
    return subprocess.run(
        ["bash", str(RECIPE), *args],
        cwd=cwd,
        env=os.environ | {"PATH": path, "OMP_WAIT_POLICY": "PASSIVE"} | env,
        capture_output=True,
        text=True,
    )


def test_plan_prints_every_command_with_its_tokens_and_gpu_hours():
    result = _recipe(["--plan"], {"BASELINES": "raw-token raw-flops wrap wrap-cot"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    commands = [line for line in lines if not line.startswith("#")]
    for seed in (0, 1, 2):  # three seeds, each in its own folder
        for model in (
            "warm_start",
            "em_1",
            "em_2",
            "em_3",
            "raw_token_matched",
            "raw_flops_matched",
            "wrap",
            "wrap_cot",
        ):
            assert sum(f"runs/paper/seed-{seed}/models/{model} " in c and " train " in c for c in commands) == 1, (
                seed,
                model,
            )
            assert any(f"-o runs/paper/seed-{seed}/eval/{model}" in c for c in commands)
    trainings = [c for c in commands if " train " in c]
    assert all(
        "--num_processes 8" in c and "--batch-size 6 --grad-accum 4" in c and "--revision" in c for c in trainings
    )  # 8 x 6 x 4 = 192
    assert sum("--tokens 13000000000" in c for c in trainings) == 3 * (
        3 + 3
    )  # M-steps, then FLOPs-matched, wrap and wrap-cot on the plan's 13B
    chunking = [c for c in commands if c.startswith("bolt chunk")]
    assert len(chunking) == 3 and all("--seed 0" in c for c in chunking), "one chunking for every seed"
    assert any(
        "--teacher openai --teacher-model gpt-4o-mini --temperature 0.7" in c and "--batch" in c for c in commands
    )
    assert any(c.startswith("bolt eval") and "--direct" in c and "runs/paper/base/eval/base" in c for c in commands), (
        "the base model's row"
    )
    assert "# seed 0: M-step 1: 13,000,000,000 tokens, ~113 GPU-hours" in lines
    assert any(
        c.startswith("bolt contamination data/finemath/warm.latents.jsonl")
        and "runs/paper/seed-2/latents/em_3.jsonl" in c
        for c in commands
    )
    assert any(line.startswith("# total training:") for line in lines) and any("$" in line for line in lines[:4])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GPUS_PER_NODE": "7"}, "GLOBAL_BATCH=192 is not a multiple of NODES x GPUS_PER_NODE x MICRO_BATCH = 7 x 6"),
        ({}, "pin it with BASE_REVISION"),
        ({"NODES": "2", "NODE_RANK": "2"}, "NODE_RANK=2 must be between 0 and NODES - 1 = 1"),
        ({"BASELINES": "raw-token fresh-raw", "BASE_REVISION": "abc", "DATA": "/nonexistent"}, None),
    ],
)
def test_recipe_refuses_a_silently_changed_batch_and_an_unpinned_base(env, message, tmp_path):
    if message is None:  # an unknown setting of the plan is not refused, but a missing FRESH is, when its stage comes
        result = _recipe(["--plan"], env)
        assert result.returncode == 2 and "fresh-raw baseline needs FRESH" in result.stderr
        return
    result = _recipe([], env, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert not list(tmp_path.iterdir()), "nothing ran"


@pytest.mark.slow
def test_recipe_runs_end_to_end_at_toy_scale(tmp_path):
    """The whole recipe on a CPU: tiny base model, the world's oracle as teacher, world text as the
    corpus, one row per task dataset; every stage runs and the report has every row."""
    from bolt.apps.world.world import WorldConfig, world_documents
    from bolt.core.records import write_jsonl

    splits = world_documents(
        WorldConfig(warm_documents=4, bootstrap_documents=4, heldout_documents=2, problems_per_document=2), 0
    )
    for split, documents in splits.items():
        write_jsonl(tmp_path / "data" / f"{split}.jsonl", [{"id": d.id, "text": d.text} for d in documents])
    rows = {
        "gsm8k": {
            "question": "Ada has 3 pens and buys 4 more. How many pens?",
            "answer": "She has 3 + 4 = <<3+4=7>>7 pens.\n#### 7",
        },
        "math": {"problem": "Solve $2x = 10$.", "solution": "Dividing by 2, $x = \\boxed{5}$."},
        "mmlu_stem": {
            "question": "SI unit of force?",
            "choices": ["joule", "newton", "watt", "pascal"],
            "answer": 1,
            "subject": "college_physics",
        },
    }
    for name, row in rows.items():
        for split in ("train", "test"):
            write_jsonl(tmp_path / "tasks" / name / f"{split}.jsonl", [row, row])
    bolt = shutil.which("bolt", path=str(Path(sys.executable).parent))
    subprocess.run(
        [
            bolt,
            "train",
            "data/warm.jsonl",
            "--layout",
            "raw",
            "--model",
            "tiny",
            "--steps",
            "2",
            "--seq-len",
            "64",
            "--batch-size",
            "2",
            "-o",
            "base",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    env = {
        "BASE": "base",
        "DATA": "data",
        "RUNS": "runs",
        "TASK_DATA": "tasks",
        "SEEDS": "0",
        "TEACHER": "oracle",
        "CHUNK_FLAGS": "--mean-units 1 --max-units 1",
        "NODES": "1",
        "GPUS_PER_NODE": "1",
        "GLOBAL_BATCH": "2",
        "MICRO_BATCH": "2",
        "SEQ_LEN": "64",
        "WARM_TOKENS": "256",
        "MSTEP_TOKENS": "256",
        "PRECISION": "no",
        "TRAIN_EXTRA": "--lr 1e-3 --warmup-steps 0",
        "LAUNCH": "bolt",
        "ESTEP_FLAGS": "-k 2 --max-new-tokens 8 --backend hf",
        "EVAL_FLAGS": "--iwae-samples 1 --max-latent-tokens 8 --max-answer-tokens 8 --limit 1 --max-gen-tokens 8 "
        "--num-fewshot 0",
        "FINETUNE_FLAGS": "--seeds 1 --samples 1 --limit 1 --max-gen-tokens 8 --max-train-examples 2",
        "BASELINES": "raw-token raw-flops",
    }
    result = _recipe([], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "runs" / "report" / "report.json").read_text())
    models = report["models"]
    assert set(models) == {"base", "warm_start", "em_1", "em_2", "em_3", "raw_token_matched", "raw_flops_matched"}
    for name in ("warm_start", "em_3"):
        assert {
            "nll_per_token",
            "iwae1_nll_per_token",
            "gsm8k_cot_latent/exact_match",
            "math_cot_latent/math_verify",
            "mmlu_stem_cot_latent/exact_match",
            "finetune/gsm8k_cot_latent/exact_match",
        } <= set(models[name])
    assert {"nll_per_token", "gsm8k_cot/exact_match", "finetune/gsm8k_cot/exact_match"} <= set(
        models["raw_flops_matched"]
    )
    assert {"nll_per_token", "math_cot/exact_match"} <= set(models["base"])
    flops = json.loads((tmp_path / "runs" / "seed-0" / "models" / "raw_flops_matched" / "manifest.json").read_text())[
        "summary"
    ]["tokens"]
    em_3 = json.loads((tmp_path / "runs" / "seed-0" / "models" / "em_3" / "manifest.json").read_text())["summary"][
        "tokens"
    ]
    assert flops == em_3, "the FLOPs-matched baseline trains on as many tokens as em_3"
    contaminated = json.loads((tmp_path / "runs" / "contamination" / "contamination.json").read_text())
    assert set(contaminated["datasets"]) == {"gsm8k", "math", "mmlu_stem"} and len(contaminated["files"]) == 2 + 3
    rerun = _recipe([], env, cwd=tmp_path)  # resumable: a rerun finds every stage done
    assert rerun.returncode == 0, rerun.stderr[-3000:]
