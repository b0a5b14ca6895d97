"""The ``bolt`` command: help, the pinned CLI surface, bad input, and end-to-end runs of every stage."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bolt import __version__
from bolt.cli import COMMANDS, build_parser, main
from bolt.em.loop import LoopConfig, demo_loop
from bolt.errors import BoltError


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def squash(text: str) -> str:
    """Text without whitespace: argparse re-wraps descriptions (and may break at hyphens)."""
    return "".join(text.split())


# --- help ---------------------------------------------------------------------------


def test_python_dash_m_bolt_help():
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-m", "bolt", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bolt")
    assert "Reasoning to learn from latent thoughts" in result.stdout
    for command in COMMANDS:
        assert command in result.stdout

    result = subprocess.run(
        [sys.executable, "-m", "bolt", "train", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage: bolt train" in result.stdout and "--checkpoint-every" in result.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bolt {__version__}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help_with_a_description(command, capsys):
    parser = subparsers()[command]
    assert parser.description and len(parser.description) > 40
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bolt {command}")
    assert squash(parser.description) in squash(out)
    assert "example: bolt" in out
    for action in parser._actions:
        for option in action.option_strings:
            assert option in out, option


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


# --- the public CLI surface ---------------------------------------------------------

HELP = {"-h", "--help", "--config"}  # every command: its help, and its options from a YAML file (--config)
SEED = {"--seed"}
OVERWRITE = {"--overwrite"}  # every command that writes stage outputs into a run directory
SURFACE = {
    "chunk": (
        ["input"],
        HELP
        | SEED
        | OVERWRITE
        | {
            "-o",
            "--output",
            "--mean-units",
            "--max-units",
            "--uniform",
            "--prefix-chunks",
            "--text-field",
            "--limit",
            "--dataset-config",
            "--split",
            "--revision",
        },
    ),
    "synthesize": (
        ["input"],
        HELP
        | SEED
        | OVERWRITE
        | {
            "-o",
            "--output",
            "--teacher",
            "--teacher-model",
            "--revision",
            "--method",
            "--prompt-file",
            "--max-new-tokens",
            "--temperature",
            "--batch-size",
            "--base-url",
            "--batch",
            "--concurrency",
            "--dry-run",
            "--pricing",
            "--cache-dir",
            "--env-file",
            "--max-retries",
            "--max-bad-replies",
            "--backoff",
            "--request-timeout",
            "--poll-interval",
            "--allow-failures",
            "--max-spend",
            "--executor",
            "--workers",
            "--gpus-per-worker",
            "--strict",
            "--limit",
        },
    ),
    "train": (
        ["input"],
        HELP
        | SEED
        | OVERWRITE
        | {
            "-o",
            "--output",
            "--model",
            "--revision",
            "--from-scratch",
            "--layout",
            "--raw-ratio",
            "--steps",
            "--tokens",
            "--epochs",
            "--seq-len",
            "--batch-size",
            "--grad-accum",
            "--lr",
            "--warmup-steps",
            "--weight-decay",
            "--clip",
            "--precision",
            "--checkpoint-every",
            "--log-every",
            "--token-cache",
            "--tokenize-workers",
            "--compile",
            "--gradient-checkpointing",
            "--report-to",
            "--strict",
        },
    ),
    "estep": (
        ["input"],
        HELP
        | SEED
        | OVERWRITE
        | {
            "-o",
            "--output",
            "--model",
            "--revision",
            "-k",
            "--samples",
            "--max-new-tokens",
            "--temperature",
            "--top-p",
            "--top-k",
            "--batch-prompts",
            "--keep-candidates",
            "--proposal",
            "--backend",
            "--device",
            "--dtype",
            "--executor",
            "--workers",
            "--gpus-per-worker",
            "--limit",
            "--estimate",
            "--strict",
        },
    ),
    "eval": (
        ["input"],
        HELP
        | SEED
        | OVERWRITE
        | {
            "-o",
            "--output",
            "--model",
            "--revision",
            "--questions",
            "--direct",
            "--iwae-samples",
            "--uniform-units",
            "--max-latent-tokens",
            "--max-answer-tokens",
            "--answer-pattern",
            "--tasks",
            "--data-dir",
            "--limit",
            "--samples",
            "--temperature",
            "--top-p",
            "--max-gen-tokens",
            "--num-fewshot",
            "--batch-size",
            "--math-timeout",
            "--batch-prompts",
            "--device",
            "--strict",
        },
    ),
    "em": (
        [],
        HELP
        | SEED
        | OVERWRITE
        | {
            "-o",
            "--output",
            "--warm-start",
            "--bootstrap",
            "--heldout",
            "--questions",
            "--model",
            "--revision",
            "--from-scratch",
            "--iterations",
            "-k",
            "--samples",
            "--proposal",
            "--estep-temperature",
            "--m-step-data",
            "--max-latent-tokens",
            "--continue-from-previous",
            "--estep-folds",
            "--epochs",
            "--seq-len",
            "--batch-size",
            "--lr",
            "--precision",
            "--steps",
            "--tokens",
            "--warmup-steps",
            "--answer-pattern",
            "--max-answer-tokens",
            "--eval-max-latent-tokens",
            "--iwae-samples",
            "--report-to",
        },
    ),
    "demo": (
        [],
        HELP
        | SEED
        | OVERWRITE
        | {
            "-o",
            "--output",
            "--quick",
            "--full",
            "--seeds",
            "-k",
            "--samples",
            "--teacher-error-rate",
            "--continue-from-previous",
            "--workers",
            "--m-step-budget",
            "--m-step-steps",
            "--proposal",
            "--wrap",
            "--sweep",
            "--estep-temperature",
            "--estep-context",
            "--estep-folds",
            "--iterations",
            "--m-step-data",
            "--demo-loop",
            "--paper-loop",
            "--wrap-cot",
            "--no-wrap-cot",
            "--warm-long",
            "--no-warm-long",
            "--warm-documents",
            "--bootstrap-documents",
            "--steps",
            "--lr",
            "--modulus",
            "--precision",
            "--compile",
        },
    ),
    "finetune-eval": (
        [],
        HELP
        | SEED
        | {
            "-o",
            "--output",
            "--model",
            "--revision",
            "--task",
            "--data-dir",
            "--seeds",
            "--epochs",
            "--lr",
            "--batch-size",
            "--max-train-examples",
            "--samples",
            "--temperature",
            "--top-p",
            "--limit",
            "--max-gen-tokens",
        },
    ),
    "report": (["runs"], HELP | {"-o", "--output"}),
    "contamination": (["files"], HELP | {"-o", "--output", "--data-dir", "--datasets", "--ngram"}),
    "view": (["inputs"], HELP | {"-o", "--output"}),
}


def test_cli_surface_is_pinned():
    """Changing a command or a flag is a change of the public interface: update this table (and the docs) on purpose."""
    parser = build_parser()
    assert {s for a in parser._actions for s in a.option_strings} == {"-h", "--help", "--version"}
    parsers = subparsers()
    assert set(parsers) == set(SURFACE) == set(COMMANDS)
    for command, (positionals, options) in SURFACE.items():
        actions = parsers[command]._actions
        assert [a.dest for a in actions if not a.option_strings] == positionals, command
        assert {s for a in actions for s in a.option_strings} == options, command


def test_short_and_long_options_are_the_same_flag():
    parsers = subparsers()
    for command, pairs in {
        "estep": [("-k", "--samples"), ("-o", "--output")],
        "em": [("-k", "--samples")],
        "chunk": [("-o", "--output")],
    }.items():
        by_option = {s: a for a in parsers[command]._actions for s in a.option_strings}
        for short, long in pairs:
            assert by_option[short] is by_option[long], (command, short)


def test_output_is_required_everywhere(capsys):
    for command in COMMANDS:
        args = [] if command == "em" else ["input.jsonl"]
        if command in ("estep", "eval"):
            args += ["--model", "m"]
        with pytest.raises(SystemExit) as info:
            main([command, *args])
        assert info.value.code == 2, command
        assert "-o/--output" in capsys.readouterr().err, command


# --- bad input through main() -------------------------------------------------------


def test_chunk_malformed_jsonl_names_file_and_line(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "A fine first document."}\n{"text": "broken\n', encoding="utf-8")
    output = tmp_path / "chunks.jsonl"
    assert main(["chunk", str(corpus), "-o", str(output)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("bolt chunk: error: ")
    assert f"{corpus}:2" in captured.err and "malformed JSON" in captured.err
    assert captured.err.count("\n") == 1, "one line, no traceback"
    assert captured.out == ""
    assert not output.exists()


def test_chunk_missing_text_field(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": 1, "body": "text under another name"}\n', encoding="utf-8")
    output = tmp_path / "chunks.jsonl"
    assert main(["chunk", str(corpus), "-o", str(output)]) == 2
    err = capsys.readouterr().err
    assert f"{corpus}:1" in err and "'text'" in err and "--text-field" in err
    assert not output.exists()
    # ... and --text-field fixes it.
    assert main(["chunk", str(corpus), "-o", str(output), "--text-field", "body"]) == 0
    assert json.loads(output.read_text().splitlines()[0])["chunks"][0]["text"] == "text under another name"


@pytest.mark.filterwarnings("ignore:.*has no bolt training manifest")
@pytest.mark.parametrize("kind", ["missing", "empty-dir", "file"])
def test_estep_model_that_is_not_an_hf_directory(kind, tiny_latents, tmp_path, capsys):
    model = tmp_path / "model"
    if kind == "empty-dir":
        model.mkdir()
    elif kind == "file":
        model.write_text("not a model")
    output = tmp_path / "latents.jsonl"
    code = main(["estep", str(tiny_latents["bootstrap_chunks"]), "--model", str(model), "-k", "2", "-o", str(output)])
    assert code == 2
    err = capsys.readouterr().err
    assert "bolt estep: error:" in err and str(model) in err and "config.json" in err
    assert not output.exists()


@pytest.mark.filterwarnings("ignore:.*has no bolt training manifest")
def test_estep_on_a_model_never_trained_with_latents(tiny_latents, tmp_path, capsys):
    from bolt.core.modeling import preset_model

    model, tokenizer = preset_model("tiny")
    directory = tmp_path / "plain"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    output = tmp_path / "latents.jsonl"
    code = main(
        ["estep", str(tiny_latents["bootstrap_chunks"]), "--model", str(directory), "-k", "2", "-o", str(output)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no latent marker tokens" in err and "bolt train" in err
    assert not output.exists()


def test_estep_on_a_raw_corpus_says_chunk_first(tiny_latents, tiny_trained_model, tmp_path, capsys):
    output = tmp_path / "latents.jsonl"
    code = main(
        [
            "estep",
            str(tiny_latents["bootstrap"]),
            "--model",
            str(tiny_trained_model),
            "-k",
            "2",
            "--max-new-tokens",
            "4",
            "-o",
            str(output),
        ]
    )
    assert code == 2
    assert "bolt chunk" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--device", "tpu"], "unknown --device 'tpu'"), (["--dtype", "fp8"], "unknown --dtype 'fp8'")]
    + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "torch sees no CUDA GPU")])
    + ([] if torch.backends.mps.is_available() else [(["--device", "mps"], "torch sees no Apple GPU")]),
)
def test_estep_bad_device_or_dtype_is_refused_before_any_work(
    flags, message, tiny_latents, tiny_trained_model, tmp_path, capsys
):
    output = tmp_path / "latents.jsonl"
    code = main(
        [
            "estep",
            str(tiny_latents["bootstrap_chunks"]),
            "--model",
            str(tiny_trained_model),
            "-k",
            "2",
            "-o",
            str(output),
            *flags,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not output.exists() and not output.with_name(output.name + ".run").exists()


def test_estep_on_cpu_equals_auto_on_a_machine_without_gpu(tiny_latents, tiny_trained_model, tmp_path):
    """``--device auto`` is the CPU when torch sees no GPU, and ``--device cpu`` gives the same latents as the
    default."""
    if torch.cuda.is_available():
        pytest.skip("auto is the GPU here")
    outputs = []
    for name, flags in (("auto", []), ("cpu", ["--device", "cpu"])):
        output = tmp_path / f"{name}.jsonl"
        argv = [
            "estep",
            str(tiny_latents["bootstrap_chunks"]),
            "--model",
            str(tiny_trained_model),
            "-k",
            "2",
            "--max-new-tokens",
            "6",
            "-o",
            str(output),
        ]
        assert main([*argv, *flags]) == 0
        outputs.append(output.read_text())
    assert outputs[0] == outputs[1]


def test_demo_with_an_empty_split_is_refused_before_any_work(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--bootstrap-documents", "0"]) == 2
    assert "--bootstrap-documents must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def _capture_config(monkeypatch, module, function: str) -> dict:
    """Replace ``module.function`` (a run_* taking config and output) by one that only keeps the config."""
    seen = {}

    def fake_run(config, output, prepare_inputs=None):
        seen["config"] = config
        output.mkdir(parents=True)
        (output / "results.md").write_text("table\n")
        return {}

    monkeypatch.setattr(module, function, fake_run)
    return seen


def test_demo_size_flags_reach_the_config(tmp_path, monkeypatch):
    import bolt.apps.world.demo

    seen = _capture_config(monkeypatch, bolt.apps.world.demo, "run_demo")
    argv = [
        "demo",
        "-o",
        str(tmp_path / "d"),
        "--warm-documents",
        "50",
        "--bootstrap-documents",
        "40",
        "--steps",
        "1200",
        "--proposal",
        "prior",
        "--lr",
        "1e-3",
        "--modulus",
        "11",
        "--precision",
        "no",
        "--compile",
    ]
    assert main(argv) == 0
    config = seen["config"]
    assert config.compile is True and bolt.apps.world.demo.DemoConfig().compile is False
    assert (
        config.world.warm_documents,
        config.world.bootstrap_documents,
        config.train.steps,
        config.loop.proposal,
        config.train.lr,
    ) == (50, 40, 1200, "prior", 1e-3)
    assert (config.world.modulus, config.train.precision) == (11, "no")
    assert config.train.batch_size == 16, "other training settings keep the preset's values"
    assert config.m_step_steps == bolt.apps.world.demo.DemoConfig().m_step_steps > 0, (
        "the default fixes the M-steps' length"
    )
    assert main(["demo", "-o", str(tmp_path / "budget"), "--m-step-budget", "steps"]) == 0
    assert (seen["config"].m_step_budget, seen["config"].m_step_steps) == ("steps", 0), (
        "a budget rule asked for replaces the fixed count"
    )
    assert main(["demo", "-o", str(tmp_path / "both"), "--m-step-budget", "steps", "--m-step-steps", "500"]) == 0
    assert seen["config"].m_step_steps == 500
    argv = [
        "demo",
        "-o",
        str(tmp_path / "e"),
        "--sweep",
        "8,1,4",
        "--estep-temperature",
        "1.2",
        "--wrap",
        "-k",
        "4",
        "--estep-context",
        "3",
        "--estep-folds",
        "3",
    ]
    assert main(argv) == 0
    config = seen["config"]
    assert (
        config.sweep,
        config.loop.temperature,
        config.wrap,
        config.loop.samples,
        config.world.estep_context,
        config.loop.estep_folds,
    ) == ([1, 4, 8], 1.2, True, 4, 3, 3)
    assert (config.world.modulus, config.train.precision) == (10, "auto"), "unset flags keep the preset's values"
    from bolt.apps.world.demo import DemoConfig

    assert DemoConfig().wrap is False and DemoConfig.full().wrap is True
    assert DemoConfig().loop == LoopConfig(max_latent_tokens=48) and DemoConfig().sweep == [1, 4, 16], (
        "the paper's loop is the default"
    )
    assert main(["demo", "-o", str(tmp_path / "p"), "--demo-loop", "--iterations", "4"]) == 0
    assert seen["config"].loop == dataclasses.replace(demo_loop(), iterations=4), "the deviation, flags on top"
    assert main(["demo", "-o", str(tmp_path / "old"), "--paper-loop"]) == 0
    assert seen["config"].loop == DemoConfig().loop, "--paper-loop (the earlier flag) is the default"
    assert (seen["config"].wrap_cot, seen["config"].warm_long) == (True, True)
    assert main(["demo", "-o", str(tmp_path / "n"), "--no-wrap-cot", "--quick", "--warm-long"]) == 0
    assert (seen["config"].wrap_cot, seen["config"].warm_long) == (False, True)


def test_quick_demo_is_the_default_pipeline_made_small(tmp_path, monkeypatch):
    """--quick shrinks sizes, steps and K only: its E-step sees the same context as the default's
    (the earlier preset fell back to the world's 3 sentences), and the K sweep still compares 1 with 4."""
    import bolt.apps.world.demo

    seen = _capture_config(monkeypatch, bolt.apps.world.demo, "run_demo")
    assert main(["demo", "-o", str(tmp_path / "q"), "--quick"]) == 0
    quick, default = seen["config"], bolt.apps.world.demo.DemoConfig()
    assert quick.world.estep_context == default.world.estep_context == 1
    assert (quick.loop.samples, quick.sweep) == (4, [1, 4])
    assert (
        quick.train.steps < default.train.steps and quick.world.bootstrap_documents < default.world.bootstrap_documents
    )
    assert (quick.train.lr, quick.loop.proposal, quick.loop.temperature, quick.m_step_budget) == (
        default.train.lr,
        default.loop.proposal,
        default.loop.temperature,
        default.m_step_budget,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sweep", "1,x"], "comma-separated whole numbers"),
        (["--sweep", "0,4"], "at least 1"),
        (["--estep-temperature", "0"], "--estep-temperature must be above 0"),
        (["--estep-context", "0"], "--estep-context 1"),
        (["--estep-folds", "151"], "--estep-folds must be between 1 and the bootstrap documents (150)"),
        (["--estep-folds", "2", "--continue-from-previous"], "drop --continue-from-previous"),
    ],
)
def test_demo_bad_flag_values_are_refused_before_any_work(tmp_path, capsys, flags, message):
    try:
        code = main(["demo", "-o", str(tmp_path / "demo"), *flags])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_train_with_two_budgets_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "data.jsonl", "-o", str(tmp_path / "m"), "--steps", "3", "--tokens", "100"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--tokens" in err and "not allowed with" in err and "--steps" in err
    assert not (tmp_path / "m").exists()


def test_train_bad_layout_is_refused_with_the_choices(tiny_latents, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "train",
                str(tiny_latents["warm_latents"]),
                "-o",
                str(tmp_path / "m"),
                "--layout",
                "sideways",
                "--steps",
                "1",
            ]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "bolt train: error: argument --layout: invalid choice: 'sideways'" in err and "'prior-only'" in err
    assert not (tmp_path / "m").exists(), "refused before any work"


def test_flag_choices_are_the_stages_own():
    """The choices come from bolt.core.choices (flags and configs alike); the layout enum and the teacher
    registry, which the CLI spells out so that parsing imports no stage, must agree with them."""
    from bolt import cli
    from bolt.core.choices import LAYOUTS
    from bolt.core.layouts import Layout
    from bolt.teachers.base import BACKENDS as TEACHERS

    assert sorted(cli.TEACHERS) == sorted(TEACHERS)
    assert tuple(layout.value for layout in Layout) == LAYOUTS


def test_synthesize_hf_teacher_needs_a_model(tiny_latents, tmp_path, capsys):
    code = main(
        ["synthesize", str(tiny_latents["bootstrap_chunks"]), "-o", str(tmp_path / "l.jsonl"), "--teacher", "hf"]
    )
    assert code == 2
    assert "--teacher-model" in capsys.readouterr().err


def test_synthesize_local_teachers_write_latents_only(tiny_latents, tmp_path, capsys):
    chunks, out = str(tiny_latents["bootstrap_chunks"]), str(tmp_path / "l.jsonl")
    assert main(["synthesize", chunks, "-o", out, "--teacher", "oracle", "--method", "wrap"]) == 2
    assert "--method wrap needs a prompt teacher" in capsys.readouterr().err
    assert main(["synthesize", chunks, "-o", out, "--teacher", "oracle", "--dry-run"]) == 2
    assert "does not call an API" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synthesize", chunks, "-o", out, "--teacher", "gemini"])
    assert (
        "invalid choice: 'gemini' (choose from 'anthropic', 'hf', 'openai', 'oracle', 'vllm')"
        in capsys.readouterr().err
    )
    from bolt.teachers.base import make_teacher

    with pytest.raises(BoltError, match="unknown --teacher 'gemini'; available: anthropic, hf, openai, oracle, vllm"):
        make_teacher("gemini")  # the Python API's own check, behind the CLI's choices


def test_eval_with_nothing_to_evaluate(tiny_trained_model, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_trained_model), "-o", str(tmp_path / "e")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_eval_unknown_task_is_a_one_line_error(tiny_trained_model, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    assert main(["eval", "--model", str(tiny_trained_model), "--tasks", "gsm8k,world", "-o", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("bolt eval: error: unknown task(s) gsm8k;")
        and "gsm8k_cot_latent" in err
        and err.count("\n") == 1
    )


def test_eval_tasks_end_to_end(tiny_trained_model, tmp_path, capsys, monkeypatch):
    """`bolt eval --tasks` on a tiny GSM8K-format file written here, offline."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "data" / "gsm8k"
    data.mkdir(parents=True)
    rows = [
        {"question": "Ada has 3 pens and buys 4 more. How many pens?", "answer": "3 + 4 = 7.\n#### 7"},
        {"question": "What is 5 times 6?", "answer": "5 * 6 = 30.\n#### 30"},
    ]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    output = tmp_path / "eval"
    results = run_ok(
        capsys,
        [
            "eval",
            "--model",
            tiny_trained_model,
            "--tasks",
            "gsm8k_cot,gsm8k_cot_latent",
            "--data-dir",
            tmp_path / "data",
            "--limit",
            "1",
            "--max-gen-tokens",
            "4",
            "-o",
            output,
        ],
    )
    stored = json.loads((output / "tasks.json").read_text())
    assert results == {"tasks": stored} and set(stored) == {"gsm8k_cot", "gsm8k_cot_latent"}
    for entry in stored.values():
        # upstream's metrics and filters (it grades the first sample: no maj@k / pass@k for these tasks)
        assert (
            entry["questions"] == 1
            and {"exact_match", "exact_match_flexible"} <= set(entry)
            and "maj_at_k" not in entry
        )
    samples = read_jsonl(output / "tasks" / "gsm8k_cot_latent.samples.jsonl")
    assert len(samples) == 2 and {s["doc_id"] for s in samples} == {0}, (
        "one row per upstream filter (strict, flexible) of the one question"
    )
    complete_manifest(output / "tasks", "eval --tasks")

    report = tmp_path / "report"
    assert main(["report", str(output), "-o", str(report)]) == 0
    printed = capsys.readouterr().out
    assert printed == (report / "report.md").read_text() and "gsm8k_cot_latent/exact_match" in printed
    assert (report / "tasks.png").is_file()


# --- end to end ---------------------------------------------------------------------

ESTEP_FIELDS = {
    "log_p_joint",
    "log_q",
    "log_w",
    "k",
    "ess",
    "iwae",
    "latent_finished",
    "latent_retokenizes",
    "prefix_tokens_cut",
    "text_tokens_cut",
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def run_ok(capsys, argv: list[str]) -> dict:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def complete_manifest(directory: Path, command: str) -> dict:
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["status"] == "complete", directory
    assert manifest["command"] == command
    assert manifest["versions"] and manifest["config"]
    return manifest


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*never reached")  # 4 training steps do not teach the latent format
def test_every_stage_end_to_end(tiny_latents, tmp_path, capsys):
    corpus, bootstrap, heldout, questions = (tiny_latents[k] for k in ("warm", "bootstrap", "heldout", "questions"))

    chunks = tmp_path / "warm.chunks.jsonl"
    summary = run_ok(capsys, ["chunk", corpus, "-o", chunks, "--prefix-chunks", "1"])
    originals = read_jsonl(corpus)
    rows = read_jsonl(chunks)
    assert summary["documents"] == len(rows) == len(originals)
    for original, row in zip(originals, rows):
        assert row["format"] == "bolt.chunks/1" and row["id"] == original["id"]
        assert "".join(c["text"] for c in row["chunks"]) == original["text"]
    complete_manifest(tmp_path / "warm.chunks.jsonl.run", "chunk")

    latents = tmp_path / "warm.latents.jsonl"
    summary = run_ok(capsys, ["synthesize", chunks, "-o", latents, "--teacher", "oracle"])
    rows = read_jsonl(latents)
    assert summary["chunks"] == sum(len(r["chunks"]) for r in rows) and summary["empty_latents"] == 0
    assert all(r["format"] == "bolt.latents/1" and all(c["latent"].strip() for c in r["chunks"]) for r in rows)
    complete_manifest(tmp_path / "warm.latents.jsonl.run", "synthesize")

    model = tmp_path / "model"
    summary = run_ok(
        capsys,
        [
            "train",
            latents,
            "--model",
            "tiny",
            "-o",
            model,
            "--steps",
            "4",
            "--seq-len",
            "128",
            "--batch-size",
            "4",
            "--lr",
            "3e-3",
        ],
    )
    assert summary["steps"] == 4
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    assert complete_manifest(model, "train")["config"]["seq_len"] == 128

    boot_chunks = tmp_path / "bootstrap.chunks.jsonl"
    run_ok(capsys, ["chunk", bootstrap, "-o", boot_chunks, "--prefix-chunks", "3"])
    boot_latents = tmp_path / "bootstrap.latents.jsonl"
    argv = ["estep", boot_chunks, "--model", model, "-k", "2", "--max-new-tokens", "16", "-o", boot_latents]
    summary = run_ok(capsys, argv)
    rows = read_jsonl(boot_latents)
    chunks_in = read_jsonl(boot_chunks)
    assert [r["id"] for r in rows] == [r["id"] for r in chunks_in]
    assert summary["chunks"] == sum(len(r["chunks"]) for r in rows)
    for row, source in zip(rows, chunks_in):
        assert row["format"] == "bolt.latents/1"
        assert [c["text"] for c in row["chunks"]] == [c["text"] for c in source["chunks"]]
        for chunk in row["chunks"]:
            assert ESTEP_FIELDS <= set(chunk), set(chunk)
            assert isinstance(chunk["latent"], str) and chunk["k"] == 2
            assert chunk["log_w"] == pytest.approx(chunk["log_p_joint"] - chunk["log_q"], abs=1e-4)
            assert chunk["log_p_joint"] < 0 and chunk["log_q"] <= 0
            assert 1.0 - 1e-6 <= chunk["ess"] <= 2.0 + 1e-6
            assert isinstance(chunk["latent_finished"], bool) and isinstance(chunk["latent_retokenizes"], bool)
            assert chunk["prefix_tokens_cut"] == 0 and chunk["text_tokens_cut"] == 0
    complete_manifest(tmp_path / "bootstrap.latents.jsonl.run", "estep")

    # Rerunning the same E-step is a no-op.
    mtime = boot_latents.stat().st_mtime_ns
    assert run_ok(capsys, argv) == summary
    assert boot_latents.stat().st_mtime_ns == mtime

    evaluation = tmp_path / "eval"
    results = run_ok(
        capsys,
        [
            "eval",
            heldout,
            "--model",
            model,
            "--questions",
            questions,
            "--iwae-samples",
            "1,2",
            "--max-latent-tokens",
            "16",
            "--max-answer-tokens",
            "16",
            "-o",
            evaluation,
        ],
    )
    stored = json.loads((evaluation / "eval.json").read_text())
    assert {"nll_per_token", "nll_per_char", "iwae1_nll_per_token", "iwae2_nll_per_token", "accuracy"} <= set(stored)
    assert "iwae4_nll_per_token" not in stored
    assert results == stored
    assert 0 < stored["nll_per_token"] < 10 and 0 <= stored["accuracy"] <= 1
    # The bounds are NLL upper bounds per token: larger than the tiny model's true NLL, up to sampling noise.
    assert stored["iwae1_nll_per_token"] > 0 and stored["iwae2_nll_per_token"] > 0
    answers = read_jsonl(evaluation / "answers.jsonl")
    assert len(answers) == len(read_jsonl(questions)) == stored["questions"]
    assert all({"latent", "answer_text", "extracted", "correct"} <= set(a) for a in answers)
    complete_manifest(evaluation, "eval")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*never reached")
def test_em_on_the_world_default_and_rerun_skips_everything(tmp_path, capsys, monkeypatch):
    output = tmp_path / "em"
    argv = [
        "em",
        "-o",
        str(output),
        "--iterations",
        "1",
        "-k",
        "2",
        "--max-latent-tokens",
        "16",
        "--epochs",
        "0.5",
        "--seq-len",
        "128",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((output / "results.json").read_text())
    assert [row["iteration"] for row in results] == [0, 1]
    assert results[0]["data"] == "teacher latents" and results[1]["data"] == "E-step, K=2"
    for row in results:
        assert {"train_loss", "nll_per_token", "iwae1_nll_per_token", "accuracy"} <= set(row)
    assert 1.0 <= results[1]["estep_mean_ess"] <= 2.0
    table = (output / "results.md").read_text()
    assert printed == table
    lines = table.splitlines()
    assert lines[0].startswith("| iteration |") and len(lines) == 4
    assert lines[2].startswith("| 0 |") and lines[3].startswith("| 1 |")
    complete_manifest(output, "em")
    for directory in ("models/warm_start", "eval/warm_start", "models/em_1", "eval/em_1"):
        assert (output / directory / "manifest.json").is_file(), directory
    assert (output / "latents" / "em_1.jsonl").is_file()

    watched = [
        output / p
        for p in (
            "models/warm_start/model.safetensors",
            "latents/em_1.jsonl",
            "models/em_1/model.safetensors",
            "eval/warm_start/eval.json",
            "eval/em_1/eval.json",
        )
    ]
    mtimes = [p.stat().st_mtime_ns for p in watched]

    def must_not_run(*args, **kwargs):
        raise AssertionError("a completed stage ran again")

    import bolt.estep.stage
    import bolt.evaluate.stage
    import bolt.train.training

    monkeypatch.setattr(bolt.train.training, "window_stream", must_not_run)
    monkeypatch.setattr(bolt.estep.stage, "run_estep", must_not_run)
    monkeypatch.setattr(bolt.evaluate.stage, "evaluate_model", must_not_run)
    assert main(argv) == 0
    assert capsys.readouterr().out == table
    assert json.loads((output / "results.json").read_text()) == results
    assert [p.stat().st_mtime_ns for p in watched] == mtimes


def test_em_estep_folds_reach_the_config(tmp_path, monkeypatch):
    import bolt.em.engine

    seen = _capture_config(monkeypatch, bolt.em.engine, "run_em")
    assert (
        main(
            [
                "em",
                "-o",
                str(tmp_path / "em"),
                "--estep-folds",
                "4",
                "--proposal",
                "prior",
                "--m-step-data",
                "teacher+bootstrap",
            ]
        )
        == 0
    )
    loop = seen["config"].loop
    assert (loop.estep_folds, loop.proposal, loop.m_step_data) == (4, "prior", "teacher+bootstrap")
    assert main(["em", "-o", str(tmp_path / "em2")]) == 0
    assert seen["config"].loop == LoopConfig(max_latent_tokens=128), "the paper's loop by default"


def test_auto_device_prefers_cuda_then_apples_gpu_then_the_cpu(monkeypatch):
    import bolt.core.modeling as modeling

    for cuda, mps, expected in ((True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(modeling, "_mps_available", lambda mps=mps: mps)
        assert modeling.resolve_device("auto").type == expected
    monkeypatch.setattr(modeling, "_mps_available", lambda: True)
    assert modeling.resolve_device("mps").type == "mps"
