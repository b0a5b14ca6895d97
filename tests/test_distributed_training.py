"""Training in two processes (torchrun, gloo on CPU) against one process on the same global batch.

Both processes read one token store: rank 0 builds it, rank 1 waits for it and maps it.

Tolerance: per-step losses within rel 1e-4 and final weights within 1e-5 absolute. The two
runs see the same windows per optimiser step and differ only in how the float sums of
the gradient all-reduce are ordered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bolt
from bolt.core.rundir import file_sha256
from bolt.train import training
from bolt.train.training import TrainConfig, train

SRC = Path(bolt.__file__).resolve().parents[1]


def metrics(directory: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {row["step"]: row["loss"] for row in rows}


def weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(directory / "model.safetensors")


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# On CPU, `accelerate launch --cpu` starts one process; --multi_gpu starts two, which run on the CPU with gloo.
ACCELERATE = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--main_process_port",
    "0",
]


def torchrun_train(
    data: Path, output: Path, *flags: str, launcher: list[str] = TORCHRUN
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    command = [*launcher, "-m", "bolt", "train", str(data), "-o", str(output), *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-5), name


COMMON = dict(model="tiny", seq_len=64, lr=3e-3, warmup_steps=2, log_every=1)
FLAGS = ["--seq-len", "64", "--lr", "3e-3", "--warmup-steps", "2", "--log-every", "1"]


@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batch(tiny_latents, tmp_path):
    data = tiny_latents["warm_latents"]
    single = tmp_path / "single"
    train(TrainConfig(**COMMON, batch_size=4, steps=6), data, single)
    # 2 processes x 1 window x 2 accumulation steps = the single run's 4 windows per step.
    cache = tmp_path / "cache"
    done = torchrun_train(
        data,
        tmp_path / "ddp",
        "--batch-size",
        "1",
        "--grad-accum",
        "2",
        "--steps",
        "6",
        "--token-cache",
        str(cache),
        *FLAGS,
    )
    (store,) = cache.iterdir()  # one store, built once, no temporary directory left
    assert json.loads((store / "header.json").read_text())["source"]["sha256"] == file_sha256(data)
    assert not (tmp_path / "ddp" / "tokens").exists() and not (single / "tokens").exists()

    one, two = metrics(single), metrics(tmp_path / "ddp")
    assert sorted(two) == list(range(1, 7))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4), step
    assert one[6] < one[1]  # the curve moves, so matching it means something
    assert_same_weights(single, tmp_path / "ddp")

    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["summary"]["processes"] == 2
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 6  # rank 0 alone logs
    assert done.stdout.count('"final_loss"') == 1  # and prints the summary
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "ddp")


@pytest.mark.slow
def test_checkpoint_of_one_process_resumes_in_two(tiny_latents, tmp_path, monkeypatch):
    data = tiny_latents["warm_latents"]
    reference = tmp_path / "reference"
    train(TrainConfig(**COMMON, batch_size=2, steps=6), data, reference)

    real_stream = training.window_stream

    def interrupted_stream(documents, config, markers):
        for index, window in enumerate(real_stream(documents, config, markers)):
            if index == 5 * 2:  # step 5 asks for its first window; the step-4 checkpoint exists
                raise KeyboardInterrupt
            yield window

    monkeypatch.setattr(training, "window_stream", interrupted_stream)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**COMMON, batch_size=2, steps=6, checkpoint_every=4), data, resumed)
    assert (resumed / "checkpoints" / "step-0000004" / "state.json").is_file()

    # Same global batch (2 = 2 processes x 1), so the single-process checkpoint is taken up.
    torchrun_train(data, resumed, "--batch-size", "1", "--steps", "6", "--checkpoint-every", "4", *FLAGS)
    rows = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    # the interrupted run's step-5 line is dropped on resume: each step once
    assert rows == [1, 2, 3, 4, 5, 6], "the two-process run must continue from step 4, not start over"
    expected, got = metrics(reference), metrics(resumed)
    for step in (5, 6):
        assert got[step] == pytest.approx(expected[step], rel=1e-4), step
    assert_same_weights(reference, resumed)
    assert not (resumed / "checkpoints").exists()


@pytest.mark.slow
def test_accelerate_launch_runs_two_processes_like_torchrun(tiny_latents, tmp_path):
    data = tiny_latents["warm_latents"]
    train(TrainConfig(**COMMON, batch_size=4, steps=3), data, tmp_path / "single")
    torchrun_train(data, tmp_path / "accelerate", "--batch-size", "2", "--steps", "3", *FLAGS, launcher=ACCELERATE)
    one, two = metrics(tmp_path / "single"), metrics(tmp_path / "accelerate")
    assert sorted(two) == [1, 2, 3]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-4), step
    assert json.loads((tmp_path / "accelerate" / "manifest.json").read_text())["summary"]["processes"] == 2


@pytest.mark.slow
def test_a_failed_build_stops_the_waiting_process_too(tiny_latents, tmp_path):
    """Rank 0 finds a malformed line while building the token store; rank 1, waiting for the store, is stopped
    by the launcher."""
    lines = tiny_latents["warm_latents"].read_text().splitlines()
    data = tmp_path / "broken.jsonl"
    data.write_text("\n".join([*lines[:3], "{not json", *lines[3:]]) + "\n")
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    command = [*TORCHRUN, "-m", "bolt", "train", str(data), "-o", str(tmp_path / "ddp"), "--steps", "1", *FLAGS]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert f"{data}:4: malformed JSON" in done.stderr
    assert not (tmp_path / "ddp" / "tokens").exists() and not (tmp_path / "ddp" / "model.safetensors").exists()
