"""Issue 23: a user's own corpus and model without traps: models by name or path, quality warnings
(and ``--strict``), ``bolt em``'s flags, a baseline of the base model, ``--limit``, failed manifests, log progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bolt.cli import main
from bolt.core.modeling import model_path, preset_model
from bolt.errors import BoltError

REVISION = "0123456789abcdef0123456789abcdef01234567"


def save_tiny(directory: Path) -> Path:
    model, tokenizer = preset_model("tiny", seed=0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face hub cache laid out as huggingface_hub does: models--org--name/{snapshots/REV/..., refs/main}."""
    home = tmp_path / "hf-home"
    repo = home / "hub" / "models--testorg--tiny-llama"
    save_tiny(repo / "snapshots" / REVISION)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local directory named testorg
    return repo


# --- 1. models by name or path ------------------------------------------------------


def test_local_directory_is_taken_as_it_is(tmp_path):
    directory = save_tiny(tmp_path / "my-model")
    assert model_path(str(directory)) == directory
    from bolt.core.modeling import load_model, load_tokenizer

    assert load_tokenizer(directory).eos_token == "</s>"
    assert load_model(directory).config.hidden_size == 64


def test_hub_id_loads_from_the_cache_offline(hub_cache, monkeypatch):
    from bolt.core.modeling import load_model, load_tokenizer, model_fingerprint

    snapshot = hub_cache / "snapshots" / REVISION
    assert model_path("testorg/tiny-llama") == snapshot
    assert model_path("testorg/tiny-llama", revision=REVISION) == snapshot
    assert load_model("testorg/tiny-llama").config.hidden_size == 64
    assert load_tokenizer("testorg/tiny-llama").eos_token == "</s>"
    assert model_fingerprint("testorg/tiny-llama") == model_fingerprint(snapshot)
    # HF_HUB_CACHE wins over HF_HOME, as in huggingface_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache.parent))
    monkeypatch.setenv("HF_HOME", "/nonexistent")
    assert model_path("testorg/tiny-llama") == snapshot


def test_hub_id_through_the_cli(hub_cache, tiny_latents, capsys):
    out = hub_cache.parent.parent.parent / "trained"
    code = main(
        [
            "train",
            str(tiny_latents["warm_latents"]),
            "--model",
            "testorg/tiny-llama",
            "--steps",
            "1",
            "--seq-len",
            "64",
            "--batch-size",
            "2",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert REVISION in json.dumps(manifest["config"])
    assert (out / "config.json").is_file()


def test_hub_id_neither_cached_nor_reachable_is_one_line(hub_cache, tiny_latents, capsys):
    code = main(["estep", str(tiny_latents["bootstrap_chunks"]), "--model", "testorg/not-there", "-o", "l.jsonl"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert (
        "testorg/not-there" in err
        and "hf download testorg/not-there" in err
        and "HF_HUB_OFFLINE" in err
        and "local model directory" in err
    )


def test_unknown_revision_offline_names_it(hub_cache, capsys):
    with pytest.raises(BoltError, match="revision v9"):
        model_path("testorg/tiny-llama", revision="v9")


def test_teacher_model_by_hub_id(hub_cache, tiny_latents, capsys):
    out = hub_cache.parent.parent.parent / "latents.jsonl"
    code = main(
        [
            "synthesize",
            str(tiny_latents["bootstrap_chunks"]),
            "--teacher",
            "hf",
            "--teacher-model",
            "testorg/tiny-llama",
            "--max-new-tokens",
            "4",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert out.is_file()


def test_missing_local_path_keeps_its_message(tmp_path, capsys):
    code = main(["estep", "x.jsonl", "--model", str(tmp_path / "nomodel"), "-o", str(tmp_path / "l.jsonl")])
    assert code == 2
    assert "no such model directory" in capsys.readouterr().err


# --- 2. quality checks, warnings, --strict -------------------------------------------


def test_repetition_test():
    from bolt.core.quality import is_repetitive

    assert is_repetitive("the sum is four. " * 10)
    assert is_repetitive("ab" * 60)
    assert not is_repetitive(
        "The licence grants each recipient a worldwide, royalty-free right to copy, modify and distribute the work, "
        "provided that the notice above is kept in every copy and the changes are marked."
    )
    assert not is_repetitive("short")


class LoopingTeacher:
    """A local teacher that writes what a small base model writes: loops, cut at the token limit."""

    name = "looping"

    def __init__(self):
        self.last_truncated = []

    def describe(self):
        return {"backend": self.name}

    def write_latents(self, requests):
        self.last_truncated = [True] * len(requests)
        return ["so the answer is so the answer is " * 8 for _ in requests]


def test_synthesize_counts_and_warns_cut_and_repeating_latents(tiny_latents, tmp_path):
    from bolt.teachers.synthesize import SynthesizeConfig, synthesize_stage

    out = tmp_path / "latents.jsonl"
    with pytest.warns(UserWarning) as caught:
        summary = synthesize_stage(LoopingTeacher(), tiny_latents["bootstrap_chunks"], out, SynthesizeConfig())
    messages = " ".join(str(w.message) for w in caught)
    chunks = summary["chunks"]
    assert summary["truncated_latents"] == chunks and summary["repetitive_latents"] == chunks
    assert "cut at the token limit" in messages and "repeat themselves" in messages
    manifest = json.loads((tmp_path / "latents.jsonl.run" / "manifest.json").read_text())
    assert manifest["summary"]["truncated_latents"] == chunks
    assert all(
        chunk["teacher_truncated"] for row in map(json.loads, out.read_text().splitlines()) for chunk in row["chunks"]
    )


def test_synthesize_strict_refuses_and_keeps_the_work(tiny_latents, tmp_path):
    from bolt.teachers.synthesize import SynthesizeConfig, synthesize_stage

    out = tmp_path / "latents.jsonl"
    with pytest.raises(BoltError, match="--strict"):
        synthesize_stage(LoopingTeacher(), tiny_latents["bootstrap_chunks"], out, SynthesizeConfig(), strict=True)
    assert not out.exists()
    assert list((tmp_path / "latents.jsonl.run").glob("partial*.jsonl")), (
        "the latents computed so far are kept for a rerun"
    )


def test_hf_teacher_cut_latents_through_the_cli(tiny_latents, tmp_path, capsys):
    model = save_tiny(tmp_path / "base")
    out = tmp_path / "latents.jsonl"
    args = [
        "synthesize",
        str(tiny_latents["bootstrap_chunks"]),
        "--teacher",
        "hf",
        "--teacher-model",
        str(model),
        "--max-new-tokens",
        "3",
        "-o",
        str(out),
    ]
    capsys.readouterr()
    assert main([*args, "--strict"]) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert (
        last.startswith("bolt synthesize: error: ")
        and "cut at the token limit (3 tokens)" in last
        and "--strict" in last
    )
    with pytest.warns(UserWarning, match="cut at the token limit"):
        assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["truncated_latents"] == summary["chunks"] > 0


def write_questions(path: Path, answers: list[str]) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": f"Question {i}?", "answer": a}) + "\n" for i, a in enumerate(answers)),
        encoding="utf-8",
    )
    return path


def test_eval_warns_on_empty_answers_and_counts_them(tiny_trained_model, tmp_path, capsys):
    questions = write_questions(tmp_path / "q.jsonl", ["1", "2", "3"])
    args = ["eval", "--model", str(tiny_trained_model), "--questions", str(questions), "--max-answer-tokens", "2"]
    with pytest.warns(UserWarning, match="answers are unusable"):
        assert main([*args, "-o", str(tmp_path / "e")]) == 0
    result = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert result["empty_answers"] + result["unparseable_answers"] >= 2
    assert main([*args, "-o", str(tmp_path / "e2"), "--strict"]) == 2
    assert "answers are unusable" in capsys.readouterr().err


def test_eval_warns_when_gold_answers_cannot_match_the_pattern(tiny_trained_model, tmp_path, capsys):
    from bolt.apps.world.world import ANSWER_PATTERN
    from bolt.evaluate.stage import EvalConfig, gold_answer_check

    questions = [{"prompt": "p", "answer": a} for a in ("MIT", "Apache-2.0", "7")]
    with pytest.warns(UserWarning, match="2 of 3 gold answers .* can never match the default --answer-pattern"):
        assert gold_answer_check(questions, EvalConfig()) == 2
    assert (
        gold_answer_check([{"prompt": "p", "answer": "7"}], EvalConfig(answer_pattern=ANSWER_PATTERN)) == 0
    )  # a group: only it must match
    path = write_questions(tmp_path / "q.jsonl", ["MIT", "BSD"])
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_trained_model),
                "--questions",
                str(path),
                "-o",
                str(tmp_path / "e"),
                "--strict",
            ]
        )
        == 2
    )
    assert "can never match" in capsys.readouterr().err
    assert not (tmp_path / "e" / "eval.json").exists()


def test_train_warns_when_warmup_is_longer_than_the_run(tiny_latents, tmp_path, capsys):
    args = [
        "train",
        str(tiny_latents["warm_latents"]),
        "--model",
        "tiny",
        "--steps",
        "3",
        "--seq-len",
        "64",
        "--batch-size",
        "2",
        "--warmup-steps",
        "1000",
    ]
    with pytest.warns(
        UserWarning, match=r"warm-up \(1000 steps\) is longer than the run \(3 steps\).*tops out at 2e-07"
    ):
        assert main([*args, "-o", str(tmp_path / "m")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["warmup_longer_than_run"] and summary["peak_lr"] == pytest.approx(2e-7)
    assert main([*args, "-o", str(tmp_path / "m2"), "--strict"]) == 2
    assert "--strict" in capsys.readouterr().err and not (tmp_path / "m2").exists()


# --- 4. a baseline of the base model -------------------------------------------------


def test_eval_direct_on_a_base_model_without_markers(tiny_latents, tmp_path, capsys):
    base = save_tiny(tmp_path / "base")
    questions = write_questions(tmp_path / "q.jsonl", ["1", "2"])
    code = main(
        [
            "eval",
            str(tiny_latents["heldout"]),
            "--model",
            str(base),
            "--questions",
            str(questions),
            "--direct",
            "--max-answer-tokens",
            "3",
            "-o",
            str(tmp_path / "e"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert result["nll_per_token"] > 0 and result["questions"] == 2 and "iwae1_nll_per_token" not in result
    # without --direct, the latent evaluation still says what the model lacks
    assert main(["eval", "--model", str(base), "--questions", str(questions), "-o", str(tmp_path / "e2")]) == 2
    assert "no latent marker tokens" in capsys.readouterr().err


# --- 3. bolt em exposes every stage's settings ---------------------------------------


@pytest.fixture()
def captured_em(monkeypatch, tmp_path):
    """``bolt em``'s config as the CLI builds it, without running the loop."""
    import bolt.em.engine

    seen = {}

    def fake_run_em(config, output, prepare_inputs=None):
        seen["config"] = config
        (output / "results.md").parent.mkdir(parents=True, exist_ok=True)
        (output / "results.md").write_text("")
        return []

    monkeypatch.setattr(bolt.em.engine, "run_em", fake_run_em)
    return seen


def test_em_flags_reach_every_stage(captured_em, tmp_path):
    args = [
        "em",
        "-o",
        str(tmp_path / "run"),
        "--steps",
        "40",
        "--warmup-steps",
        "4",
        "--lr",
        "1e-4",
        "--answer-pattern",
        "[A-D]",
        "--max-answer-tokens",
        "200",
        "--max-latent-tokens",
        "300",
        "--eval-max-latent-tokens",
        "500",
        "--iwae-samples",
        "1,8",
        "--estep-temperature",
        "0.7",
    ]
    assert main(args) == 0
    config = captured_em["config"]
    assert (config.train.steps, config.train.epochs, config.train.warmup_steps, config.train.lr) == (40, None, 4, 1e-4)
    assert (
        config.eval.answer_pattern,
        config.eval.max_answer_tokens,
        config.eval.max_latent_tokens,
        config.eval.iwae_samples,
    ) == ("[A-D]", 200, 500, [1, 8])
    assert (config.loop.max_latent_tokens, config.loop.temperature) == (300, 0.7)


def test_em_defaults_and_budget_flags(captured_em, tmp_path, capsys):
    assert main(["em", "-o", str(tmp_path / "a")]) == 0
    config = captured_em["config"]
    assert (config.train.epochs, config.train.steps, config.train.warmup_steps) == (2.0, None, 10)
    assert config.eval.max_latent_tokens == config.loop.max_latent_tokens == 128
    assert main(["em", "-o", str(tmp_path / "b"), "--tokens", "10000"]) == 0
    assert (captured_em["config"].train.tokens, captured_em["config"].train.epochs) == (10000, None)
    with pytest.raises(SystemExit) as info:
        main(["em", "-o", str(tmp_path / "c"), "--steps", "3", "--epochs", "1"])
    assert info.value.code == 2


def test_world_keeps_a_given_answer_pattern(tmp_path):
    from bolt.apps.world.world import ANSWER_PATTERN, WorldConfig, em_inputs
    from bolt.em.engine import EMConfig
    from bolt.evaluate.stage import EvalConfig

    world = WorldConfig(warm_documents=2, bootstrap_documents=2, heldout_documents=1, questions=2)
    assert em_inputs(EMConfig(world=world), tmp_path / "a").eval.answer_pattern == ANSWER_PATTERN
    assert (
        em_inputs(EMConfig(world=world, eval=EvalConfig(answer_pattern="x")), tmp_path / "b").eval.answer_pattern == "x"
    )


def test_estep_warning_names_the_budget_of_each_command(tiny_trained_model, tiny_latents, tmp_path):
    from bolt.estep.sampling import SamplingConfig
    from bolt.estep.stage import EStepConfig, estep_stage

    config = EStepConfig(samples=1, sampling=SamplingConfig(max_new_tokens=1))
    with pytest.warns(UserWarning) as caught:
        estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], tmp_path / "l.jsonl", config)
    message = next(str(w.message) for w in caught if "never reached" in str(w.message))
    assert "--max-new-tokens of `bolt estep`, --max-latent-tokens of `bolt em`" in message


# --- 5. --limit, failed manifests, progress in logs, the tiny preset, unknown flags ----


def test_limit_on_synthesize_and_estep(tiny_latents, tiny_trained_model, tmp_path, capsys):
    out = tmp_path / "latents.jsonl"
    assert (
        main(["synthesize", str(tiny_latents["warm_chunks"]), "--teacher", "oracle", "--limit", "3", "-o", str(out)])
        == 0
    )
    assert len(out.read_text().splitlines()) == 3
    estep_out = tmp_path / "estep.jsonl"
    assert (
        main(
            [
                "estep",
                str(tiny_latents["bootstrap_chunks"]),
                "--model",
                str(tiny_trained_model),
                "-k",
                "1",
                "--max-new-tokens",
                "2",
                "--limit",
                "1",
                "-o",
                str(estep_out),
            ]
        )
        == 0
    )
    assert len(estep_out.read_text().splitlines()) == 1
    assert json.loads((tmp_path / "estep.jsonl.run" / "manifest.json").read_text())["config"]["limit"] == 1
    assert (
        main(
            [
                "estep",
                str(tiny_latents["bootstrap_chunks"]),
                "--model",
                str(tiny_trained_model),
                "--limit",
                "0",
                "-o",
                str(tmp_path / "x.jsonl"),
            ]
        )
        == 2
    )


def test_a_failed_command_marks_its_manifest_failed(tiny_latents, tmp_path, capsys):
    out = tmp_path / "latents.jsonl"
    args = [
        "synthesize",
        str(tiny_latents["bootstrap_chunks"]),
        "--teacher",
        "hf",
        "--teacher-model",
        str(save_tiny(tmp_path / "base")),
        "--max-new-tokens",
        "3",
        "-o",
        str(out),
        "--strict",
    ]
    assert main(args) == 2
    manifest = json.loads((tmp_path / "latents.jsonl.run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "cut at the token limit" in manifest["error"]


def test_failed_manifest_is_scrubbed(tmp_path):
    from bolt.core.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.start("x", {})
    assert run.fail(RuntimeError("request to https://user:sk-abcdefghijklmnopqrstuvwxyz0123456789@host failed"))
    manifest = run.read_manifest()
    assert manifest["status"] == "failed" and "sk-abcdefghijklmnopqrstuvwxyz0123456789" not in manifest["error"]
    assert not run.fail(RuntimeError("again")), "only a running manifest is marked"


def test_progress_in_logs_prints_lines_with_rate_and_eta(monkeypatch):
    import io

    import bolt.core.progress as progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    bar = progress.progress_bar(total=100, desc="E-step em_2", unit="chunk", file=log, disable=None)
    assert isinstance(bar, progress.LogProgress)
    for _ in range(100):
        clock[0] += 1.0
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert 8 <= len(lines) <= 11, lines  # one per 10% (the first after the quiet 10 s)
    assert lines[0].startswith("E-step em_2: 10/100 chunk (10%) in 0:10, 1 chunk/s, 1:30 left")
    assert lines[-1].startswith("E-step em_2: 100/100 chunk (100%)")
    assert "\r" not in log.getvalue()
    # slow runs: a line per minute between the 10% marks
    log, clock[0] = io.StringIO(), 0.0
    bar = progress.LogProgress(total=1000, desc="train", unit="step", file=log)
    for _ in range(30):
        clock[0] += 30.0
        bar.update(1)
    assert len(log.getvalue().splitlines()) == 15  # 15 minutes, one line a minute


def test_a_batch_that_decodes_for_minutes_is_not_silent_in_a_log(monkeypatch, tiny_trained_model, tiny_latents):
    """One E-step batch can decode 1,024 tokens for many minutes: the sampler's heartbeat gives the
    open bar a line a minute, naming the token it is at."""
    import io

    import bolt.core.progress as progress
    from bolt.core.modeling import load_model_and_tokenizer
    from bolt.estep.sampling import SamplingConfig, sample_continuations

    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    bar = progress.progress_bar(total=3, desc="E-step em_1", unit="chunk", file=log, disable=None)
    model, _tokenizer = load_model_and_tokenizer(tiny_trained_model)
    real_draw = __import__("bolt.estep.sampling", fromlist=["_draw"])._draw

    def slow_draw(*args, **kwargs):
        clock[0] += 20.0  # 20 s per decoding step
        return real_draw(*args, **kwargs)

    monkeypatch.setattr("bolt.estep.sampling._draw", slow_draw)
    import numpy as np

    sample_continuations(
        model,
        [[1, 2, 3]],
        2,
        set(),
        SamplingConfig(max_new_tokens=9),
        [np.random.default_rng(i) for i in range(2)],
        pad_id=0,
    )
    bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) >= 3, lines
    assert (
        lines[0].startswith("E-step em_1: 0/3 chunk (0%) in 1:00")
        and "decoding token 4/9, 2 of 2 rows still running" in lines[0]
    )
    assert bar not in progress._OPEN, "a closed bar gets no more heartbeats"
    progress.heartbeat("after the bar closed")  # nothing, no error


def test_run_name_names_the_iteration():
    from bolt.core.progress import run_name

    assert run_name("runs/em/latents/em_2.jsonl.run/partial-3.jsonl") == "em_2"


def test_train_without_model_on_a_real_corpus_warns(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": f"doc{i}", "text": "A licence is a grant of rights. " * 20}) + "\n" for i in range(4))
    )
    with pytest.warns(UserWarning, match="no --model given: training the built-in 'tiny' preset"):
        assert (
            main(
                [
                    "train",
                    str(corpus),
                    "--layout",
                    "raw",
                    "--steps",
                    "1",
                    "--seq-len",
                    "64",
                    "--batch-size",
                    "2",
                    "-o",
                    str(tmp_path / "m"),
                ]
            )
            == 0
        )


def test_unknown_flag_names_the_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        main(["em", "-o", "x", "--max-new-tokens", "5"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("bolt em: error: unrecognized arguments: --max-new-tokens 5; did you mean --max-latent-tokens?")
        and "`bolt em --help`" in err
    )
