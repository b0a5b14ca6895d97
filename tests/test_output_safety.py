"""Issue 25: outputs are the user's, checkpoints survive a kill, damaged outputs are recomputed, leftovers go.

Each test names the defect it pins; every one failed on the code before the fix.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bolt.cli import main
from bolt.core.chunking import ChunkConfig, chunk_stage
from bolt.core.records import atomic_path, write_jsonl
from bolt.core.rundir import RunDir
from bolt.errors import BoltError
from bolt.train import training
from bolt.train.training import TrainConfig, train

TRAIN = dict(model="tiny", seq_len=64, batch_size=2, lr=3e-3, log_every=1)
TRAIN_ARGS = ["--model", "tiny", "--seq-len", "64", "--batch-size", "2", "--lr", "3e-3", "--log-every", "1"]


def steps_logged(directory: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (directory / "metrics.jsonl").read_text().splitlines() if line.strip()]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def run_cli(capsys, argv) -> tuple[int, str]:
    capsys.readouterr()  # what earlier calls printed
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- 1. no command deletes or overwrites what it did not write ---------------------------


def test_train_refuses_a_directory_of_the_users_files_even_with_overwrite(tiny_latents, tmp_path, capsys):
    output = tmp_path / "x"
    (output / "checkpoints").mkdir(parents=True)
    (output / "checkpoints" / "n").write_text("mine")
    (output / "tokens").mkdir()
    (output / "tokens" / "t").write_text("mine")
    (output / "metrics.jsonl").write_text('{"mine": 1}\n')
    (output / "config.json").write_text('{"mine": 1}\n')
    before = snapshot(output)
    for extra in ([], ["--overwrite"]):
        code, err = run_cli(
            capsys, ["train", tiny_latents["warm_latents"], *TRAIN_ARGS, "--steps", "2", "-o", output, *extra]
        )
        assert code == 2
        assert len(err.strip().splitlines()) == 1 and "not written by bolt" in err and "name another output path" in err
        assert snapshot(output) == before


def test_train_of_another_config_needs_overwrite_which_keeps_the_users_files(tiny_latents, tmp_path, capsys):
    output = tmp_path / "m"
    train(TrainConfig(**TRAIN, steps=2), tiny_latents["warm_latents"], output)
    (output / "notes.txt").write_text("my notes")
    before = snapshot(output)
    code, err = run_cli(capsys, ["train", tiny_latents["warm_latents"], *TRAIN_ARGS, "--steps", "3", "-o", output])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--overwrite" in err and "another config" in err
    assert snapshot(output) == before
    code, err = run_cli(
        capsys, ["train", tiny_latents["warm_latents"], *TRAIN_ARGS, "--steps", "3", "-o", output, "--overwrite"]
    )
    assert code == 0, err
    assert (output / "notes.txt").read_text() == "my notes"
    assert steps_logged(output) == [1, 2, 3]
    assert json.loads((output / "manifest.json").read_text())["config"]["steps"] == 3
    assert "BOLT_OVERWRITE" not in os.environ  # the flag does not outlive its command


def test_same_config_with_another_batch_split_is_the_same_run(tiny_latents, tmp_path):
    output = tmp_path / "m"
    train(TrainConfig(**TRAIN, steps=2), tiny_latents["warm_latents"], output)
    train(
        TrainConfig(**{**TRAIN, "batch_size": 1}, grad_accum=2, steps=2), tiny_latents["warm_latents"], output
    )  # no --overwrite needed


def test_chunk_onto_its_own_input_is_refused(tiny_latents, tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(tiny_latents["warm"].read_bytes())
    before = corpus.read_bytes()
    for extra in ([], ["--overwrite"]):
        code, err = run_cli(capsys, ["chunk", corpus, "-o", corpus, *extra])
        assert code == 2 and len(err.strip().splitlines()) == 1 and "is also the corpus input" in err
    assert corpus.read_bytes() == before
    assert not (tmp_path / "c.jsonl.run").exists()


def test_an_output_file_bolt_did_not_write_is_never_replaced(tiny_latents, tmp_path, capsys):
    output = tmp_path / "chunks.jsonl"
    output.write_text("my own file\n")
    for extra in ([], ["--overwrite"]):
        code, err = run_cli(capsys, ["chunk", tiny_latents["warm"], "-o", output, *extra])
        assert code == 2 and "bolt did not write it" in err and len(err.strip().splitlines()) == 1
    assert output.read_text() == "my own file\n"
    code, err = run_cli(capsys, ["chunk", tiny_latents["warm"], "-o", tmp_path])
    assert code == 2 and "is a directory" in err


def test_a_stage_output_of_another_config_needs_overwrite(tiny_latents, tmp_path):
    output = tmp_path / "chunks.jsonl"
    chunk_stage(tiny_latents["warm"], output, ChunkConfig(seed=1))
    before = output.read_bytes()
    with pytest.raises(BoltError, match=r"another config.*--overwrite"):
        chunk_stage(tiny_latents["warm"], output, ChunkConfig(seed=2, mean_units=3))
    assert output.read_bytes() == before
    chunk_stage(tiny_latents["warm"], output, ChunkConfig(seed=2, mean_units=3), overwrite=True)
    assert output.read_bytes() != before
    assert json.loads((tmp_path / "chunks.jsonl.run" / "manifest.json").read_text())["config"]["chunk"]["seed"] == 2


# --- 2. checkpoints survive a kill; metrics are not repeated -----------------------------

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from bolt.train import training
    calls = {"n": 0}
    real = training.fsync_path
    def fsync_path(path):  # the checkpoint's files are flushed one by one before the rename
        if ".step-" in str(path) and ".tmp-" in str(path):
            calls["n"] += 1
            if calls["n"] == int(os.environ["KILL_AT_FSYNC"]):
                os.kill(os.getpid(), signal.SIGKILL)
        real(path)
    training.fsync_path = fsync_path
    from bolt.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_sigkill_during_a_checkpoint_write_then_rerun_resumes(tiny_latents, tmp_path):
    """A SIGKILL while the step-4 checkpoint is being written: the rerun removes the temporary
    checkpoint, resumes from step 2, logs each step once and ends with the uninterrupted weights."""
    from safetensors.torch import load_file

    data = tiny_latents["warm_latents"]
    argv = ["train", str(data), *TRAIN_ARGS, "--steps", "6", "--checkpoint-every", "2"]
    reference = tmp_path / "reference"
    train(TrainConfig(**TRAIN, steps=6, checkpoint_every=2), data, reference)

    output = tmp_path / "killed"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(training.__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
        "KILL_AT_FSYNC": "8",
    }  # the 2nd checkpoint: well past the first one's files
    killed = subprocess.run(
        [sys.executable, str(script), *argv, "-o", str(output)], env=env, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    temporaries = list((output / "checkpoints").glob(".step-0000004.tmp-*"))
    assert temporaries and not (output / "checkpoints" / "step-0000004").exists()
    assert (output / "checkpoints" / "step-0000002" / "state.json").is_file()

    rerun = subprocess.run(
        [sys.executable, "-m", "bolt", *argv, "-o", str(output)], env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads((output / "manifest.json").read_text())["status"] == "complete"
    assert not (output / "checkpoints").exists()
    assert steps_logged(output) == [1, 2, 3, 4, 5, 6]
    a, b = load_file(reference / "model.safetensors"), load_file(output / "model.safetensors")
    for name in a:
        assert (a[name] - b[name]).abs().max().item() < 1e-5, name


def test_an_empty_state_json_and_a_partial_temporary_checkpoint_are_ignored(tiny_latents, tmp_path):
    """What a kill left with the old non-atomic writer (0-byte state.json) and the new one (a temporary)."""
    data = tiny_latents["warm_latents"]
    output = tmp_path / "m"

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    config = TrainConfig(**TRAIN, steps=4, checkpoint_every=2)
    real_save = training._save_checkpoint
    saves = {"n": 0}

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        saves["n"] += 1
        stop()

    training._save_checkpoint = save_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config, data, output)
    finally:
        training._save_checkpoint = real_save
    checkpoint = output / "checkpoints" / "step-0000002"
    (checkpoint / "state.json").write_bytes(b"")  # the old writer's kill between open and write
    stale = output / "checkpoints" / f".step-0000004.tmp-{socket.gethostname()}-{dead_pid()}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.warns(UserWarning, match="incomplete"):
        train(config, data, output)
    assert json.loads((output / "manifest.json").read_text())["status"] == "complete"
    assert steps_logged(output) == [1, 2, 3, 4]  # started afresh: the step-2 lines were not kept twice
    assert not (output / "checkpoints").exists()


def test_a_kill_after_the_final_manifest_keeps_the_model_and_cleans_up(tiny_latents, tmp_path, monkeypatch):
    """The final model is complete and recorded before checkpoints go: a kill between the two
    leaves a finished run, which a rerun keeps (no retraining) and tidies."""
    data = tiny_latents["warm_latents"]
    output = tmp_path / "m"
    config = TrainConfig(**TRAIN, steps=4, checkpoint_every=2)
    real_rmtree = training.shutil.rmtree

    def killed(path, *args, **kwargs):
        if Path(path).name == "checkpoints":
            raise KeyboardInterrupt  # stands for the SIGKILL: nothing after this line runs
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(training.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        train(config, data, output)
    monkeypatch.setattr(training.shutil, "rmtree", real_rmtree)
    assert json.loads((output / "manifest.json").read_text())["status"] == "complete"
    assert (output / "checkpoints").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a complete run must not train again")

    monkeypatch.setattr(training, "window_stream", no_training)
    train(config, data, output)
    assert not (output / "checkpoints").exists() and not (output / "tokens").exists()


def test_resume_drops_metrics_past_the_checkpoint_and_a_cut_last_line(tmp_path):
    run = RunDir(tmp_path)
    for step in (1, 2, 3, 4):
        run.log_metrics(step=step, loss=1.0)
    with open(run.metrics_path, "a") as handle:
        handle.write('{"step": 5, "lo')  # cut by a kill
    run.truncate_metrics(2)
    assert steps_logged(tmp_path) == [1, 2]
    with open(run.metrics_path, "a") as handle:
        handle.write('{"step": 3, "lo')
    run.log_metrics(step=3, loss=0.5)
    assert steps_logged(tmp_path) == [1, 2, 3]


# --- 3. a damaged "complete" output is recomputed ----------------------------------------


def test_a_damaged_chunk_output_is_recomputed_with_a_warning(tiny_latents, tmp_path, capsys):
    output = tmp_path / "c.jsonl"
    assert run_cli(capsys, ["chunk", tiny_latents["warm"], "-o", output])[0] == 0
    good = output.read_bytes()
    manifest = json.loads((tmp_path / "c.jsonl.run" / "manifest.json").read_text())
    assert manifest["outputs"]["../c.jsonl"]["size"] == len(good)
    output.write_bytes(good[:100])
    with pytest.warns(UserWarning, match="has 100 bytes where bolt wrote .*computing it again"):
        assert run_cli(capsys, ["chunk", tiny_latents["warm"], "-o", output])[0] == 0
    assert output.read_bytes() == good
    output.write_bytes(good.replace(b"a", b"b", 1))  # same size, other bytes
    with pytest.warns(UserWarning, match="sha256 differs"):
        assert run_cli(capsys, ["chunk", tiny_latents["warm"], "-o", output])[0] == 0
    assert output.read_bytes() == good


def test_a_damaged_estep_output_is_recomputed(tiny_trained_model, tiny_latents, tmp_path):
    from bolt.estep.sampling import SamplingConfig
    from bolt.estep.stage import EStepConfig, estep_stage

    output = tmp_path / "latents.jsonl"
    config = EStepConfig(samples=2, seed=0, sampling=SamplingConfig(max_new_tokens=8), batch_prompts=4)
    estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], output, config)
    good = output.read_bytes()
    output.write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="computing it again"):
        estep_stage(tiny_trained_model, tiny_latents["bootstrap_chunks"], output, config)
    assert output.read_bytes() == good


def test_a_damaged_model_is_trained_again(tiny_latents, tmp_path):
    output = tmp_path / "m"
    config = TrainConfig(**TRAIN, steps=2)
    train(config, tiny_latents["warm_latents"], output)
    good = (output / "model.safetensors").read_bytes()
    (output / "model.safetensors").write_bytes(good[:1000])
    with pytest.warns(UserWarning, match="model.safetensors has 1000 bytes where bolt wrote"):
        train(config, tiny_latents["warm_latents"], output)
    assert (output / "model.safetensors").read_bytes() == good


# --- 4. leftovers --------------------------------------------------------------------------


def test_temporaries_of_dead_writers_go_those_of_live_writers_stay(tmp_path):
    target = tmp_path / "out.jsonl"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = socket.gethostname()
        dead = dead_pid()
        stale = [
            tmp_path / f".out.jsonl.tmp-{dead}",
            tmp_path / f".out.jsonl.tmp-{host}-{dead}",
        ]  # older bolt's name, then today's
        kept = [
            tmp_path / f".out.jsonl.tmp-{host}-{live.pid}",
            tmp_path / f".out.jsonl.tmp-another-machine-{dead}",
            tmp_path / ".other.jsonl.tmp-1",
        ]
        for path in stale + kept:
            path.write_text("partial")
        write_jsonl(target, [{"a": 1}])
        assert target.read_text() == '{"a": 1}\n'
        assert [path.exists() for path in stale] == [False, False]
        assert all(path.exists() for path in kept)
    finally:
        live.kill()
        live.wait()


def test_a_failed_write_leaves_no_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.json") as temporary:
            temporary.write_text("half")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_a_failed_training_leaves_no_directory_it_created(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chunks": 3}\n')
    output = tmp_path / "model"
    code, err = run_cli(capsys, ["train", bad, *TRAIN_ARGS, "--steps", "2", "-o", output])
    assert code == 2 and "'chunks' must be a non-empty list" in err
    assert not output.exists()
    output.mkdir()  # the user's own (empty) directory stays
    assert run_cli(capsys, ["train", bad, *TRAIN_ARGS, "--steps", "2", "-o", output])[0] == 2
    assert output.is_dir() and list(output.iterdir()) == []


def test_a_failed_stage_leaves_no_run_directory_it_created(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n')
    code, err = run_cli(capsys, ["chunk", bad, "-o", tmp_path / "c.jsonl"])
    assert code == 2 and "no 'text' field" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
