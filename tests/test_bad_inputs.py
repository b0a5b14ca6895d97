"""Issue 25, item 8 and 9: every bad input and environment fault is one line, never a traceback.

A table of bad command lines across the commands, each with its exit code (2: the user's
input or flags, 1: the environment: a read-only directory, a full disk) and a fragment of
the one line it must print. Every case also checks that stderr (warnings included) is
exactly that one line, and that no file that existed before, the fixtures' inputs and
models included, was changed. Commands run in-process through ``bolt.cli.main``.

Placeholders in the argv: {corpus} raw world corpus, {chunks} bootstrap chunks, {latents}
oracle latents, {model} a trained tiny model, {half} a training that has not finished,
{trunc} a model whose model.safetensors is cut in half (bolt's manifest records its size),
{trunc_foreign} the same without bolt's manifest, {bad_json}/{bad_utf8} corpora with a
broken line, {questions}, {file} a user's file, {userdir} a user's non-empty directory,
{out} a fresh path, {ro} a directory where nothing may be written (EACCES), {full} a
directory on a full disk (ENOSPC). The last two are simulated by patching the write calls
(the tests may run as root, for whom chmod does not forbid anything).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from bolt.cli import main

TRAIN = ["--model", "tiny", "--seq-len", "64", "--batch-size", "2", "--steps", "2"]
ESTEP = ["--max-new-tokens", "4", "-k", "1"]

# (id, argv, exit code, fragment of the one line)
CASES = [
    # --- chunk
    ("chunk-missing-input", ["chunk", "{out}/none.jsonl", "-o", "{out}/c.jsonl"], 2, "no such file"),
    ("chunk-input-is-dir", ["chunk", "{userdir}", "-o", "{out}/c.jsonl"], 2, "is a directory, expected a JSONL"),
    ("chunk-output-is-dir", ["chunk", "{corpus}", "-o", "{userdir}"], 2, "is a directory; -o names the output file"),
    ("chunk-output-below-a-file", ["chunk", "{corpus}", "-o", "{file}/c.jsonl"], 2, "is a file, not a directory"),
    ("chunk-output-users-file", ["chunk", "{corpus}", "-o", "{file}"], 2, "bolt did not write it"),
    ("chunk-output-is-input", ["chunk", "{corpus}", "-o", "{corpus}"], 2, "is also the corpus input"),
    (
        "chunk-mean-units-nan",
        ["chunk", "{corpus}", "-o", "{out}/c.jsonl", "--mean-units", "nan"],
        2,
        "--mean-units must be a finite number",
    ),
    (
        "chunk-mean-units-inf",
        ["chunk", "{corpus}", "-o", "{out}/c.jsonl", "--mean-units", "inf"],
        2,
        "--mean-units must be a finite number",
    ),
    (
        "chunk-mean-units-zero",
        ["chunk", "{corpus}", "-o", "{out}/c.jsonl", "--mean-units", "0"],
        2,
        "--mean-units must be a finite number of at least 1",
    ),
    ("chunk-mean-units-negative", ["chunk", "{corpus}", "-o", "{out}/c.jsonl", "--mean-units", "-3"], 2, "at least 1"),
    (
        "chunk-mean-units-text",
        ["chunk", "{corpus}", "-o", "{out}/c.jsonl", "--mean-units", "lots"],
        2,
        "invalid float value: 'lots'",
    ),
    (
        "chunk-max-units-zero",
        ["chunk", "{corpus}", "-o", "{out}/c.jsonl", "--max-units", "0"],
        2,
        "--max-units must be at least 1",
    ),
    (
        "chunk-prefix-chunks",
        ["chunk", "{corpus}", "-o", "{out}/c.jsonl", "--prefix-chunks", "-2"],
        2,
        "--prefix-chunks must be -1",
    ),
    ("chunk-seed-negative", ["chunk", "{corpus}", "-o", "{out}/c.jsonl", "--seed", "-1"], 2, "--seed must be >= 0"),
    ("chunk-malformed-json", ["chunk", "{bad_json}", "-o", "{out}/c.jsonl"], 2, "bad.json.jsonl:2: malformed JSON"),
    ("chunk-invalid-utf8", ["chunk", "{bad_utf8}", "-o", "{out}/c.jsonl"], 2, "bad.utf8.jsonl:2: not valid UTF-8"),
    ("chunk-read-only-dir", ["chunk", "{corpus}", "-o", "{ro}/c.jsonl"], 1, "Permission denied (EACCES)"),
    (
        "chunk-disk-full",
        ["chunk", "{corpus}", "-o", "{full}/c.jsonl"],
        1,
        "No space left on device (ENOSPC); the disk is full",
    ),
    # --- synthesize --teacher oracle
    (
        "synth-missing-input",
        ["synthesize", "{out}/none.jsonl", "--teacher", "oracle", "-o", "{out}/l.jsonl"],
        2,
        "no such file",
    ),
    (
        "synth-output-is-dir",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{userdir}"],
        2,
        "is a directory; -o names the output file",
    ),
    (
        "synth-output-users-file",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{file}"],
        2,
        "bolt did not write it",
    ),
    ("synth-output-is-input", ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{chunks}"], 2, "is also the"),
    (
        "synth-temperature-negative",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{out}/l.jsonl", "--temperature", "-1"],
        2,
        "--temperature must be >= 0",
    ),
    (
        "synth-temperature-nan",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{out}/l.jsonl", "--temperature", "nan"],
        2,
        "--temperature must be a finite number",
    ),
    (
        "synth-batch-size-zero",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{out}/l.jsonl", "--batch-size", "0"],
        2,
        "--batch-size must be at least 1",
    ),
    (
        "synth-batch-with-oracle",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{out}/l.jsonl", "--batch"],
        2,
        "--batch is for the API teachers",
    ),
    (
        "synth-base-url-with-oracle",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{out}/l.jsonl", "--base-url", "http://x"],
        2,
        "--base-url is for the API teachers",
    ),
    (
        "synth-max-new-tokens-zero",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{out}/l.jsonl", "--max-new-tokens", "0"],
        2,
        "--max-new-tokens must be at least 1",
    ),
    (
        "synth-dry-run-oracle",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{out}/l.jsonl", "--dry-run"],
        2,
        "does not call an API",
    ),
    (
        "synth-unknown-teacher",
        ["synthesize", "{chunks}", "--teacher", "gemini", "-o", "{out}/l.jsonl"],
        2,
        "invalid choice: 'gemini'",
    ),
    (
        "synth-read-only-dir",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{ro}/l.jsonl"],
        1,
        "Permission denied (EACCES)",
    ),
    (
        "synth-disk-full",
        ["synthesize", "{chunks}", "--teacher", "oracle", "-o", "{full}/l.jsonl"],
        1,
        "No space left on device (ENOSPC)",
    ),
    # --- train
    (
        "train-lr-negative",
        ["train", "{latents}", *TRAIN, "--lr", "-1", "-o", "{out}/m"],
        2,
        "--lr must be a positive number, got -1.0",
    ),
    (
        "train-lr-zero",
        ["train", "{latents}", *TRAIN, "--lr", "0", "-o", "{out}/m"],
        2,
        "--lr must be a positive number",
    ),
    ("train-lr-nan", ["train", "{latents}", *TRAIN, "--lr", "nan", "-o", "{out}/m"], 2, "--lr must be a finite number"),
    (
        "train-checkpoint-every-negative",
        ["train", "{latents}", *TRAIN, "--checkpoint-every", "-1", "-o", "{out}/m"],
        2,
        "--checkpoint-every must be >= 0",
    ),
    (
        "train-steps-zero",
        ["train", "{latents}", "--model", "tiny", "--steps", "0", "-o", "{out}/m"],
        2,
        "--steps must be positive",
    ),
    (
        "train-epochs-nan",
        ["train", "{latents}", "--model", "tiny", "--epochs", "nan", "-o", "{out}/m"],
        2,
        "--epochs must be a finite number",
    ),
    (
        "train-epochs-negative",
        ["train", "{latents}", "--model", "tiny", "--epochs", "-2", "-o", "{out}/m"],
        2,
        "--epochs must be positive",
    ),
    (
        "train-seq-len-one",
        ["train", "{latents}", "--model", "tiny", "--steps", "1", "--seq-len", "1", "-o", "{out}/m"],
        2,
        "--seq-len must be >= 2",
    ),
    (
        "train-raw-ratio",
        ["train", "{latents}", *TRAIN, "--raw-ratio", "2", "-o", "{out}/m"],
        2,
        "--raw-ratio must be in [0, 1]",
    ),
    (
        "train-warmup-negative",
        ["train", "{latents}", *TRAIN, "--warmup-steps", "-5", "-o", "{out}/m"],
        2,
        "--warmup-steps must be >= 0",
    ),
    (
        "train-clip-negative",
        ["train", "{latents}", *TRAIN, "--clip", "-1", "-o", "{out}/m"],
        2,
        "--clip must be a finite number >= 0",
    ),
    (
        "train-weight-decay-inf",
        ["train", "{latents}", *TRAIN, "--weight-decay", "inf", "-o", "{out}/m"],
        2,
        "--weight-decay must be a finite number",
    ),
    (
        "train-log-every-zero",
        ["train", "{latents}", *TRAIN, "--log-every", "0", "-o", "{out}/m"],
        2,
        "--log-every must be at least 1",
    ),
    (
        "train-tokenize-workers-zero",
        ["train", "{latents}", *TRAIN, "--tokenize-workers", "0", "-o", "{out}/m"],
        2,
        "--tokenize-workers must be >= 1",
    ),
    (
        "train-two-budgets",
        ["train", "{latents}", "--steps", "1", "--tokens", "9", "-o", "{out}/m"],
        2,
        "not allowed with argument",
    ),
    (
        "train-output-is-file",
        ["train", "{latents}", *TRAIN, "-o", "{file}"],
        2,
        "is a file, where bolt needs a directory",
    ),
    ("train-output-below-a-file", ["train", "{latents}", *TRAIN, "-o", "{file}/m"], 2, "is a file, not a directory"),
    ("train-output-users-dir", ["train", "{latents}", *TRAIN, "-o", "{userdir}"], 2, "not written by bolt"),
    ("train-missing-input", ["train", "{out}/none.jsonl", *TRAIN, "-o", "{out}/m"], 2, "no such file"),
    (
        "train-corpus-without-latents",
        ["train", "{corpus}", *TRAIN, "-o", "{out}/m"],
        2,
        "a plain corpus has no latents",
    ),
    (
        "train-model-missing",
        ["train", "{latents}", "--model", "{out}/nomodel", "--steps", "1", "-o", "{out}/m"],
        2,
        "no such model directory",
    ),
    (
        "train-model-is-file",
        ["train", "{latents}", "--model", "{file}", "--steps", "1", "-o", "{out}/m"],
        2,
        "--model takes a model directory",
    ),
    (
        "train-model-unfinished",
        ["train", "{latents}", "--model", "{half}", "--steps", "1", "-o", "{out}/m"],
        2,
        "this training has not finished",
    ),
    (
        "train-model-truncated",
        ["train", "{latents}", "--model", "{trunc}", "--steps", "1", "--seq-len", "64", "-o", "{out}/m"],
        2,
        "the file is damaged",
    ),
    (
        "train-model-truncated-foreign",
        ["train", "{latents}", "--model", "{trunc_foreign}", "--steps", "1", "--seq-len", "64", "-o", "{out}/m"],
        2,
        "damaged or truncated",
    ),
    ("train-read-only-dir", ["train", "{latents}", *TRAIN, "-o", "{ro}/m"], 1, "Permission denied (EACCES)"),
    ("train-disk-full", ["train", "{latents}", *TRAIN, "-o", "{full}/m"], 1, "No space left on device (ENOSPC)"),
    # --- estep
    (
        "estep-temperature-zero",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--temperature", "0"],
        2,
        "--temperature must be a number above 0",
    ),
    (
        "estep-temperature-nan",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--temperature", "nan"],
        2,
        "--temperature must be a finite number",
    ),
    (
        "estep-top-p-zero",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--top-p", "0"],
        2,
        "--top-p must be in (0, 1]",
    ),
    (
        "estep-top-p-inf",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--top-p", "inf"],
        2,
        "--top-p must be a finite number",
    ),
    (
        "estep-top-k-negative",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--top-k", "-1"],
        2,
        "--top-k must be >= 0",
    ),
    (
        "estep-samples-zero",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "-k", "0"],
        2,
        "-k/--samples must be at least 1",
    ),
    (
        "estep-max-new-tokens-zero",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--max-new-tokens", "0"],
        2,
        "--max-new-tokens >= 1",
    ),
    (
        "estep-batch-prompts-zero",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--batch-prompts", "0"],
        2,
        "--batch-prompts must be at least 1",
    ),
    (
        "estep-model-missing",
        ["estep", "{chunks}", "--model", "{out}/nomodel", "-o", "{out}/l.jsonl"],
        2,
        "no such model directory",
    ),
    (
        "estep-model-is-file",
        ["estep", "{chunks}", "--model", "{file}", "-o", "{out}/l.jsonl"],
        2,
        "--model takes a model directory",
    ),
    (
        "estep-model-unfinished",
        ["estep", "{chunks}", "--model", "{half}", "-o", "{out}/l.jsonl"],
        2,
        "this training has not finished",
    ),
    (
        "estep-model-truncated",
        ["estep", "{chunks}", "--model", "{trunc}", "-o", "{out}/l.jsonl"],
        2,
        "model.safetensors: has",
    ),
    (
        "estep-model-truncated-foreign",
        ["estep", "{chunks}", "--model", "{trunc_foreign}", "-o", "{out}/l.jsonl", *ESTEP],
        2,
        "damaged or truncated",
    ),
    (
        "estep-device-unknown",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--device", "tpu"],
        2,
        "unknown --device 'tpu'",
    ),
    (
        "estep-dtype-unknown",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--dtype", "float8"],
        2,
        "unknown --dtype 'float8'",
    ),
    (
        "estep-workers-zero",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--workers", "0"],
        2,
        "--workers must be at least 1",
    ),
    (
        "estep-executor-unknown",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{out}/l.jsonl", "--executor", "dask"],
        2,
        "argument --executor: invalid choice: 'dask'",
    ),
    (
        "estep-output-is-dir",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{userdir}"],
        2,
        "is a directory; -o names the output file",
    ),
    (
        "estep-output-users-file",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{file}"],
        2,
        "bolt did not write it",
    ),
    (
        "estep-output-is-input",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{chunks}"],
        2,
        "is also the chunks input",
    ),
    (
        "estep-missing-input",
        ["estep", "{out}/none.jsonl", "--model", "{model}", "-o", "{out}/l.jsonl", *ESTEP],
        2,
        "no such file",
    ),
    (
        "estep-read-only-dir",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{ro}/l.jsonl", *ESTEP],
        1,
        "Permission denied (EACCES)",
    ),
    (
        "estep-disk-full",
        ["estep", "{chunks}", "--model", "{model}", "-o", "{full}/l.jsonl", *ESTEP],
        1,
        "No space left on device (ENOSPC)",
    ),
    # --- eval
    ("eval-nothing", ["eval", "--model", "{model}", "-o", "{out}/e"], 2, "nothing to evaluate"),
    (
        "eval-output-is-file",
        ["eval", "{corpus}", "--model", "{model}", "-o", "{file}"],
        2,
        "is a file, where bolt needs a directory",
    ),
    ("eval-output-users-dir", ["eval", "{corpus}", "--model", "{model}", "-o", "{userdir}"], 2, "not written by bolt"),
    (
        "eval-model-missing",
        ["eval", "{corpus}", "--model", "{out}/nomodel", "-o", "{out}/e"],
        2,
        "no such model directory",
    ),
    (
        "eval-model-unfinished",
        ["eval", "{corpus}", "--model", "{half}", "-o", "{out}/e"],
        2,
        "this training has not finished",
    ),
    ("eval-model-truncated", ["eval", "{corpus}", "--model", "{trunc}", "-o", "{out}/e"], 2, "the file is damaged"),
    (
        "eval-iwae-samples-text",
        ["eval", "{corpus}", "--model", "{model}", "-o", "{out}/e", "--iwae-samples", "1,x"],
        2,
        "argument --iwae-samples: takes comma-separated integers",
    ),
    (
        "eval-iwae-samples-zero",
        ["eval", "{corpus}", "--model", "{model}", "-o", "{out}/e", "--iwae-samples", "0"],
        2,
        "--iwae-samples must be positive",
    ),
    (
        "eval-answer-pattern",
        ["eval", "{corpus}", "--model", "{model}", "-o", "{out}/e", "--answer-pattern", "("],
        2,
        "--answer-pattern is not a valid regex",
    ),
    (
        "eval-max-latent-tokens-zero",
        ["eval", "{corpus}", "--model", "{model}", "-o", "{out}/e", "--max-latent-tokens", "0"],
        2,
        "--max-latent-tokens must be at least 1",
    ),
    (
        "eval-uniform-units-zero",
        ["eval", "{corpus}", "--model", "{model}", "-o", "{out}/e", "--uniform-units", "0"],
        2,
        "--uniform-units must be at least 1",
    ),
    (
        "eval-missing-questions",
        ["eval", "--questions", "{out}/none.jsonl", "--model", "{model}", "-o", "{out}/e"],
        2,
        "no such file",
    ),
    (
        "eval-read-only-dir",
        ["eval", "--questions", "{questions}", "--model", "{model}", "-o", "{ro}/e", "--max-answer-tokens", "2"],
        1,
        "Permission denied (EACCES)",
    ),
    # --- em
    ("em-lr-negative", ["em", "-o", "{out}/em", "--lr", "-1"], 2, "--lr must be a positive number"),
    ("em-epochs-nan", ["em", "-o", "{out}/em", "--epochs", "nan"], 2, "--epochs must be a finite number"),
    (
        "em-estep-temperature-inf",
        ["em", "-o", "{out}/em", "--estep-temperature", "inf"],
        2,
        "--estep-temperature must be a finite number",
    ),
    (
        "em-estep-temperature-zero",
        ["em", "-o", "{out}/em", "--estep-temperature", "0"],
        2,
        "--estep-temperature must be above 0",
    ),
    ("em-samples-zero", ["em", "-o", "{out}/em", "-k", "0"], 2, "-k/--samples at least 1"),
    ("em-iterations-negative", ["em", "-o", "{out}/em", "--iterations", "-1"], 2, "--iterations must be at least 0"),
    (
        "em-warm-start-alone",
        ["em", "-o", "{out}/em", "--warm-start", "{latents}"],
        2,
        "give both --warm-start and --bootstrap",
    ),
    ("em-output-is-file", ["em", "-o", "{file}"], 2, "is a file, where bolt needs a directory"),
    ("em-output-users-dir", ["em", "-o", "{userdir}"], 2, "not written by bolt"),
    ("em-read-only-dir", ["em", "-o", "{ro}/em"], 1, "Permission denied (EACCES)"),
    # --- demo
    ("demo-lr-nan", ["demo", "-o", "{out}/d", "--lr", "nan"], 2, "--lr must be a finite number"),
    ("demo-lr-negative", ["demo", "-o", "{out}/d", "--lr", "-1"], 2, "--lr must be a positive number"),
    (
        "demo-teacher-error-rate",
        ["demo", "-o", "{out}/d", "--teacher-error-rate", "2"],
        2,
        "teacher error rate must be in [0, 1]",
    ),
    ("demo-steps-zero", ["demo", "-o", "{out}/d", "--steps", "0"], 2, "--steps must be positive"),
    ("demo-workers-zero", ["demo", "-o", "{out}/d", "--workers", "0"], 2, "--workers must be at least 1"),
    ("demo-quick-and-full", ["demo", "-o", "{out}/d", "--quick", "--full"], 2, "not allowed with argument"),
    ("demo-output-is-file", ["demo", "-o", "{file}", "--quick"], 2, "is a file, where bolt needs a directory"),
    ("demo-output-users-dir", ["demo", "-o", "{userdir}", "--quick"], 2, "not written by bolt"),
    # --- report
    ("report-missing-run", ["report", "{out}/none", "-o", "{out}/r"], 2, "no results.json"),
    ("report-output-is-file", ["report", "{model}", "-o", "{file}"], 2, "is a file; -o names the output directory"),
    ("report-output-below-a-file", ["report", "{model}", "-o", "{file}/r"], 2, "is a file, not a directory"),
    ("report-output-users-dir", ["report", "{model}", "-o", "{userdir}"], 2, "not written by bolt"),
]


def snapshot(*roots: Path) -> dict[str, bytes]:
    files = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")) if Path(root).is_dir() else [Path(root)]:
            if path.is_file():
                files[str(path)] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def inputs(tiny_latents, tiny_trained_model, tmp_path_factory):
    """Damaged models and inputs beside the session's tiny world and model (none of them ever changes)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    half = root / "half"
    shutil.copytree(tiny_trained_model, half)
    for name in ("model.safetensors", "tokenizer.json"):
        (half / name).unlink()  # what a kill before the final save leaves, give or take checkpoints
    manifest = json.loads((half / "manifest.json").read_text())
    (half / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    trunc = root / "trunc"
    shutil.copytree(tiny_trained_model, trunc)
    weights = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    trunc_foreign = root / "trunc-foreign"
    shutil.copytree(trunc, trunc_foreign)
    (trunc_foreign / "manifest.json").unlink()
    lines = tiny_latents["warm"].read_bytes().splitlines(keepends=True)
    (root / "bad.json.jsonl").write_bytes(lines[0] + b'{"text": "cut\n' + b"".join(lines[1:]))
    (root / "bad.utf8.jsonl").write_bytes(lines[0] + b'{"text": "caf\xe9"}\n' + b"".join(lines[1:]))
    return {
        "corpus": tiny_latents["warm"],
        "chunks": tiny_latents["bootstrap_chunks"],
        "latents": tiny_latents["warm_latents"],
        "questions": tiny_latents["questions"],
        "model": tiny_trained_model,
        "half": half,
        "trunc": trunc,
        "trunc_foreign": trunc_foreign,
        "bad_json": root / "bad.json.jsonl",
        "bad_utf8": root / "bad.utf8.jsonl",
    }


def forbid_writes(monkeypatch, directory: Path, code: int, mkdir_too: bool) -> None:
    """Make every write (open for writing, os.open with O_CREAT/O_WRONLY/O_RDWR, and with ``mkdir_too`` mkdir)
    under ``directory`` fail with ``code``."""
    root = os.path.abspath(directory)

    def inside(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(root + os.sep)
        except TypeError:  # a file descriptor
            return False

    def fail(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def patched_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(flag in mode for flag in "wax+"):
            fail(file)
        return real_open(file, mode, *args, **kwargs)

    def patched_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            fail(path)
        return real_os_open(path, flags, *args, **kwargs)

    def patched_mkdir(path, *args, **kwargs):
        if mkdir_too and inside(path):
            fail(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", patched_open)
    monkeypatch.setattr(io, "open", patched_open)
    monkeypatch.setattr(os, "open", patched_os_open)
    monkeypatch.setattr(os, "mkdir", patched_mkdir)


@pytest.mark.parametrize(("argv", "code", "fragment"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line(inputs, tmp_path, monkeypatch, capsys, argv, code, fragment):
    out = tmp_path / "out"
    out.mkdir()
    user_file = tmp_path / "notes.txt"
    user_file.write_text("the user's notes\n")
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "data.txt").write_text("the user's data\n")
    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir()
    full.mkdir()
    forbid_writes(monkeypatch, ro, errno.EACCES, mkdir_too=True)
    places = {**inputs, "out": out, "file": user_file, "userdir": user_dir, "ro": ro, "full": full}
    forbid_writes(monkeypatch, full, errno.ENOSPC, mkdir_too=False)
    argv = [part.format(**{name: str(path) for name, path in places.items()}) for part in argv]
    watched = [tmp_path, *(Path(p) for name, p in inputs.items()), Path(inputs["corpus"]).parent]
    before = snapshot(*watched)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            exit_code = main(argv)
        except SystemExit as stop:  # argparse
            exit_code = stop.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines() + [f"warning: {w.message}" for w in caught]
    assert exit_code == code, err
    assert len(lines) == 1, lines
    assert "Traceback" not in err and fragment in lines[0], lines
    assert lines[0].startswith("bolt"), lines
    after = snapshot(*watched)
    assert {name: data for name, data in after.items() if name in before} == before, (
        "a file that existed before was changed"
    )


def test_the_table_covers_every_command_and_at_least_60_cases():
    commands = {argv[0] for _, argv, _, _ in CASES}
    assert commands == {"chunk", "synthesize", "train", "estep", "eval", "em", "demo", "report"}
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)
    assert {code for *_, code, _ in CASES} == {1, 2}


def test_latents_given_to_estep_are_accepted_with_a_warning(inputs, tmp_path, capsys):
    """bolt.latents/1 is bolt.chunks/1 with latents (docs/FORMATS.md): a valid E-step input; the latents it
    holds are replaced, and the user is told."""
    with pytest.warns(UserWarning, match="already holds latents .* the E-step ignores them"):
        assert (
            main(
                [
                    "estep",
                    str(inputs["latents"]),
                    "--model",
                    str(inputs["model"]),
                    "-o",
                    str(tmp_path / "l.jsonl"),
                    *ESTEP,
                ]
            )
            == 0
        )


def test_a_damaged_line_inside_a_partial_file_is_dropped_once_with_a_warning(tmp_path):
    from bolt.core.records import Chunk, Document, PartialDocuments

    path = tmp_path / "partial.jsonl"
    partial = PartialDocuments(path, "key")
    for name in ("a", "b", "c"):
        partial.add(Document(id=name, chunks=[Chunk(text=f"text {name}")]))
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:20] + b"\xff\xfe" + lines[1][22:]  # invalid UTF-8 in the middle record
    path.write_bytes(b"\n".join(lines))
    with pytest.warns(UserWarning, match=r"partial.jsonl: 1 damaged line\(s\) dropped \(line 2"):
        assert sorted(PartialDocuments(path, "key").done) == ["a", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # dropped once: the next reader sees a clean file
        assert sorted(PartialDocuments(path, "key").done) == ["a", "c"]
