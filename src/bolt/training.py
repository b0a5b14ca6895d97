"""Stage 2 and the M-step: causal-LM training on thought-augmented (or raw) text.

Documents are tokenised once into a memory-mapped token store (``bolt.token_store``,
``OUT/tokens/`` or ``--token-cache``), rendered with a layout (coins re-drawn every epoch, order
reshuffled every epoch), packed back to back into fixed windows, and trained with plain
next-token cross-entropy on every token. The optimiser is AdamW with a cosine schedule
and warm-up, gradients are clipped, and the loop runs under ``accelerate`` so the same
code serves one CPU, several GPUs (DDP/FSDP via ``accelerate launch``/``torchrun``).

Several processes: the main process builds the token store while the others wait for it,
then every process maps it, renders the same window stream and takes every
``world``-th window of each micro-batch, so one optimiser step always sees the same
``batch_size x grad_accum x processes`` windows, whatever way they are split; rank 0
alone writes the manifest, metrics and the final model (gathered from FSDP shards).

The window stream is a pure function of (data, config, seed): a checkpoint stores how
many windows were consumed, and resuming replays the stream up to that point, so a
resumed run sees exactly the batches an uninterrupted one would.

The output directory is itself a Hugging Face model directory (``from_pretrained(OUT)``)
with ``manifest.json`` and ``metrics.jsonl`` beside the weights.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from bolt.errors import BoltError
from bolt.layouts import Layout, TokenizedDocument, render
from bolt.modeling import context_window, load_model_and_tokenizer
from bolt.records import is_chunked_file
from bolt.rundir import RunDir, config_to_json, file_sha256
from bolt.special_tokens import MarkerIds, add_latent_tokens, marker_ids
from bolt.token_store import StoreKey, open_token_store


PRECISIONS = ("no", "bf16", "fp16", "auto")


def resolve_precision(precision: str) -> str:
    """The mixed precision a training runs with: ``precision`` itself, except "auto", which is
    bf16 on GPUs that support it and on CPUs where a bf16 matrix product beats an fp32 one
    (measured once per process, ~0.2 s), else no."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_bf16_is_faster() else "no"


@functools.cache
def cpu_bf16_is_faster(size: int = 256, repeats: int = 4) -> bool:
    """Whether a ``size`` x ``size`` matrix product takes less time in bf16 than in fp32 on this
    CPU (the best of ``repeats``, after a warm-up). CPUs without native bf16 emulate it: ~1 GFLOP/s
    against ~160 in fp32 on a 2-core AVX2 machine."""
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
    return best[torch.bfloat16] < best[torch.float32]


@dataclass
class TrainConfig:
    """One training run (an M-step, a warm start or a baseline)."""

    model: str = "tiny"
    """HF model directory to continue from, or a preset name (tiny, small) to start from scratch."""
    from_scratch: bool = False
    """Re-initialise the weights of ``model`` from its config (keeps its tokenizer and architecture)."""
    layout: str = "random"
    """random, joint, posterior, prior-only, posterior-only, pure or raw (see bolt.layouts)."""
    raw_ratio: float = 0.0
    """Share of documents rendered without latents each epoch (mix-in-raw)."""
    seq_len: int = 512
    """Packed window length in tokens (the paper: 2048)."""
    batch_size: int = 8
    """Windows per process per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    steps: int | None = None
    """Optimiser steps. Exactly one of steps, tokens, epochs may be set; default: 1 epoch."""
    tokens: int | None = None
    """Training tokens, converted to steps by rounding up."""
    epochs: float | None = None
    """Passes over the rendered data, converted to steps by rounding up."""
    lr: float = 1e-4
    """Peak learning rate of AdamW (the paper: 1e-4)."""
    warmup_steps: int = 0
    """Linear warm-up steps before the cosine decay (the paper: 1000)."""
    weight_decay: float = 0.01
    clip: float = 1.0
    """Gradient-norm clipping threshold."""
    precision: str = "no"
    """Mixed precision: no, bf16, fp16 or auto. "no" leaves the choice to the launcher
    (``accelerate launch --mixed_precision bf16``). "auto" takes bf16 where this device computes
    it faster than fp32 (``resolve_precision``): bf16 trains 1.6-2.2x faster on CPUs with
    AVX-512 BF16 or AMX, but about 13x slower on CPUs without them (AVX2 only: many laptops)."""
    seed: int = 0
    checkpoint_every: int = 0
    """Save a resumable checkpoint every N steps (0: only at the end of training)."""
    log_every: int = 10

    def validate(self) -> None:
        try:
            Layout(self.layout)
        except ValueError:
            raise BoltError(f"unknown --layout {self.layout!r}; choose from {', '.join(l.value for l in Layout)}.") from None
        budgets = [name for name in ("steps", "tokens", "epochs") if getattr(self, name) is not None]
        if len(budgets) > 1:
            raise BoltError(f"--{' and --'.join(budgets)} conflict: give one training budget.")
        if not 0.0 <= self.raw_ratio <= 1.0:
            raise BoltError(f"--raw-ratio must be in [0, 1], got {self.raw_ratio}.")
        if self.seq_len < 2 or self.batch_size < 1 or self.grad_accum < 1:
            raise BoltError("--seq-len must be >= 2, --batch-size and --grad-accum >= 1.")
        if self.precision not in PRECISIONS:
            raise BoltError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        for name in ("steps", "tokens", "epochs"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise BoltError(f"--{name} must be positive, got {value}.")


def check_training_file(path: Path, layout: Layout) -> None:
    """Chunked/latent data; for ``--layout raw`` a plain corpus (one chunk per document) too."""
    if not is_chunked_file(path) and layout is not Layout.RAW:
        raise BoltError(f"{path}: a plain corpus has no latents; --layout {layout.value} needs `bolt synthesize` or `bolt estep` output (or use --layout raw).")


def training_data(config: TrainConfig, data_path: Path, tokenizer, markers: MarkerIds, store_directory: Path,
                  token_cache: Path | None = None, builds: bool = True, workers: int = 1) -> tuple[Sequence[TokenizedDocument], int]:
    """The documents to render (read from the token store as they are needed) and the tokens of one epoch.

    The store lives in ``store_directory`` or, with ``token_cache``, in a directory of the
    cache named after the data's sha256 and the tokenizer; ``builds``: this process builds
    it (with ``workers`` tokenising processes), the others wait for it.
    """
    layout = Layout(config.layout)
    key = StoreKey.of(data_path, tokenizer)
    directory = token_cache / key.name if token_cache is not None else store_directory
    store = open_token_store(data_path, tokenizer, directory, key, build=builds, workers=workers,
                             require_latents=layout.needs_latents and layout is not Layout.PURE)
    tokens_per_epoch = store.tokens_per_epoch(layout, markers, config.seed, config.raw_ratio)
    return store.documents(store.with_latents(layout)), tokens_per_epoch


def window_stream(documents: Sequence[TokenizedDocument], config: TrainConfig, markers) -> Iterator[list[int]]:
    """Endless packed windows: every epoch reshuffles documents and re-draws layout coins."""
    layout = Layout(config.layout)
    buffer: list[int] = []
    for epoch in range(1 << 30):
        order = np.random.default_rng([config.seed, epoch]).permutation(len(documents))
        for index in order:
            rng = np.random.default_rng([config.seed, epoch, int(index)])
            buffer.extend(render(documents[index], layout, markers, rng, config.raw_ratio))
            while len(buffer) >= config.seq_len:
                yield buffer[: config.seq_len]
                del buffer[: config.seq_len]


def plan_steps(config: TrainConfig, tokens_per_epoch: int, windows_per_step: int) -> int:
    tokens_per_step = windows_per_step * config.seq_len
    if config.steps is not None:
        return config.steps
    if config.tokens is not None:
        return math.ceil(config.tokens / tokens_per_step)
    epochs = config.epochs if config.epochs is not None else 1.0
    return max(1, math.ceil(epochs * tokens_per_epoch / tokens_per_step))


def _latest_checkpoint(output: Path, identity: dict) -> Path | None:
    """The newest complete checkpoint of a run with the same config and data, if any."""
    checkpoints = sorted((output / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p for p in checkpoints if (p / "state.json").exists()]
    if not complete:
        return None
    state = json.loads((complete[-1] / "state.json").read_text())
    if state.get("identity") != identity:
        warnings.warn(f"{complete[-1]} was saved with another config or other data; training starts afresh.", stacklevel=3)
        return None
    return complete[-1]


def resume_identity(config: TrainConfig, data_path: Path, windows_per_step: int) -> dict:
    """What a checkpoint must match to be resumed.

    The per-process batch and accumulation are left out and the global batch kept, so a
    run checkpointed by 2 processes x batch 2 resumes in 1 process x batch 4 (and back).
    """
    fields = {k: v for k, v in config_to_json(config).items() if k not in ("batch_size", "grad_accum")}
    return {"config": fields, "windows_per_step": windows_per_step, "data_sha256": file_sha256(data_path)}


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's inductor backend would find for CPU code ($CXX, g++,
    clang++ or c++ on the PATH), or None."""
    return next((found for name in (os.environ.get("CXX", ""), "g++", "clang++", "c++") if name and (found := shutil.which(name))), None)


def check_compile_possible() -> None:
    """``torch.compile``'s default backend (inductor) writes C++ for CPUs: without a GPU, refuse
    before any work where no C++ compiler is on the PATH, instead of failing at the first step."""
    if not torch.cuda.is_available() and cpp_compiler() is None:
        raise BoltError("--compile on a CPU needs a C++ compiler (g++ or clang++, or $CXX) for torch.compile's inductor backend; install one or drop --compile.")


def train(config: TrainConfig, data_path: Path, output: Path, token_cache: Path | None = None, tokenize_workers: int = 1, compile: bool = False) -> dict:
    """Train and save an HF model directory at ``output``; resumes from its checkpoints.

    The token store is ``output/tokens/`` (removed when training completes) or, with
    ``token_cache``, a directory of that shared cache (kept for other runs on the same data);
    the main process builds it with ``tokenize_workers`` processes where it is missing.

    ``compile`` runs the forward and backward passes through ``torch.compile`` (inductor):
    the same model and optimiser, other kernels. It is not part of the run's identity (a
    finished run is not retrained for it), like ``tokenize_workers``; the summary records it.
    On one AVX2 core (fp32) the world model's steps ran 1.16x faster compiled (steps of both
    interleaved in one process), after ~5 s of compiling; whole runs of
    ``benchmarks/train_throughput.py --compile`` gave 0.93x and 1.10x, inside that machine's
    run-to-run noise. Made for GPUs, where it is not measured yet.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from transformers import get_cosine_schedule_with_warmup

    config.validate()
    if compile:
        check_compile_possible()
    layout = Layout(config.layout)
    run = RunDir(output)
    if run.is_complete(config, inputs={"data": data_path}) and (output / "config.json").exists():
        return run.read_manifest()["summary"]
    precision = resolve_precision(config.precision)
    # accelerate keeps one process-wide state, fixed by the first Accelerator: a later training
    # in the same process (a notebook, the demo with --workers 1) would inherit that training's
    # precision, or fail to change it. Each training starts from a fresh state; the process
    # group (PartialState) is kept.
    AcceleratorState._reset_state()
    # DDP/FSDP and their settings come from the launcher (torchrun, accelerate launch/config).
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=None if config.precision == "no" else precision,  # "no": the launcher's setting; auto decides itself
        gradient_accumulation_steps=config.grad_accum,
    )
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true") and accelerator.distributed_type.value != "FSDP":
        warnings.warn(f"FSDP was asked for, but accelerate runs {accelerator.distributed_type.value} (FSDP needs GPUs): training without sharding.", stacklevel=2)
    check_training_file(data_path, layout)
    model, tokenizer = load_model_and_tokenizer(config.model, seed=config.seed, from_scratch=config.from_scratch)
    add_latent_tokens(tokenizer, model)
    markers = marker_ids(tokenizer)
    if config.seq_len > context_window(model):
        raise BoltError(f"--seq-len {config.seq_len} exceeds the model's context window ({context_window(model)}).")
    documents, tokens_per_epoch = training_data(config, data_path, tokenizer, markers, output / "tokens", token_cache,
                                                builds=accelerator.is_main_process, workers=tokenize_workers)
    if tokens_per_epoch < config.seq_len:
        raise BoltError(f"{data_path}: only {tokens_per_epoch} tokens in one epoch, fewer than one --seq-len {config.seq_len} window. Lower --seq-len or add data.")
    world = accelerator.num_processes
    windows_per_step = config.batch_size * config.grad_accum * world
    total_steps = plan_steps(config, tokens_per_epoch, windows_per_step)

    parameters = sum(p.numel() for p in model.parameters())  # before FSDP shards them
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, total_steps)
    # The scheduler stays outside ``prepare``: accelerate would step it once per process per
    # step, but ``total_steps`` already counts global optimiser steps.
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    # only the loss goes through the compiled wrapper: checkpoints, clipping and saving keep
    # using the prepared module itself, whose parameters the wrapper shares
    forward = torch.compile(model) if compile else model
    if accelerator.is_main_process:
        run.start("train", config, inputs={"data": data_path}, seed=config.seed)

    step = 0
    identity = resume_identity(config, data_path, windows_per_step)
    checkpoint = _latest_checkpoint(output, identity)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        step = json.loads((checkpoint / "state.json").read_text())["step"]
    elif accelerator.is_main_process:
        run.metrics_path.unlink(missing_ok=True)  # a fresh start: no lines from an earlier, different run
    stream = window_stream(documents, config, markers)
    for _ in range(step * windows_per_step):
        next(stream)

    model.train()
    progress = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=None if accelerator.is_main_process else True)
    started, tokens_seen, last_loss = time.monotonic(), 0, float("nan")
    while step < total_steps:
        losses = []
        for _ in range(config.grad_accum):
            windows = [next(stream) for _ in range(config.batch_size * world)]
            mine = windows[accelerator.process_index :: world]
            batch = torch.tensor(mine, dtype=torch.long, device=accelerator.device)
            with accelerator.accumulate(model):
                loss = forward(input_ids=batch, labels=batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.clip)
                optimizer.step()
                optimizer.zero_grad()
            losses.append(loss.detach())
        scheduler.step()
        step += 1
        tokens_seen += windows_per_step * config.seq_len
        last_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
        progress.update(1)
        progress.set_postfix(loss=f"{last_loss:.3f}")
        if accelerator.is_main_process and (step % config.log_every == 0 or step == total_steps):
            elapsed = time.monotonic() - started
            run.log_metrics(step=step, loss=last_loss, lr=scheduler.get_last_lr()[0], tokens=step * windows_per_step * config.seq_len, tokens_per_second=tokens_seen / max(elapsed, 1e-9))
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total_steps:
            _save_checkpoint(accelerator, output, step, identity)
    progress.close()

    accelerator.wait_for_everyone()
    summary = {
        "steps": total_steps,
        "final_loss": last_loss,
        "tokens": total_steps * windows_per_step * config.seq_len,
        "tokens_per_epoch": tokens_per_epoch,
        "tokens_per_second": tokens_seen / max(time.monotonic() - started, 1e-9),
        "seconds": time.monotonic() - started,
        "parameters": parameters,
        "processes": world,
        "distributed": accelerator.distributed_type.value,
        "mixed_precision": accelerator.mixed_precision,
        "compiled": compile,
    }
    state_dict = accelerator.get_state_dict(model)  # every rank takes part: FSDP gathers the full weights
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(output, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(output)
        shutil.rmtree(output / "checkpoints", ignore_errors=True)
        shutil.rmtree(output / "tokens", ignore_errors=True)  # the model directory stays a plain HF directory
        run.finish(**summary)
    accelerator.wait_for_everyone()
    return summary


def _save_checkpoint(accelerator, output: Path, step: int, identity: dict) -> None:
    directory = output / "checkpoints" / f"step-{step:07d}"
    accelerator.save_state(str(directory))
    if accelerator.is_main_process:
        (directory / "state.json").write_text(json.dumps({"step": step, "identity": identity}))
        for old in (output / "checkpoints").glob("step-*"):
            if old != directory:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
