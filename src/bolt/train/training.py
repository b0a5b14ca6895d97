"""Stage 2 and the M-step: causal-LM training on thought-augmented (or raw) text.

Documents are tokenised once into a memory-mapped token store (``bolt.core.token_store``,
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bolt.core.layouts import Layout, TokenizedDocument, render
from bolt.core.modeling import context_window, load_model_and_tokenizer
from bolt.core.progress import progress_bar
from bolt.core.records import (
    fsync_path,
    is_chunked_file,
    is_temporary,
    remove_path,
    remove_stale_temporaries_in,
    temporary_name,
    writer_tag,
)
from bolt.core.rundir import RunDir, config_to_json, file_sha256
from bolt.core.special_tokens import MarkerIds, add_latent_tokens, marker_ids
from bolt.core.token_store import StoreKey, open_token_store
from bolt.errors import BoltError
from bolt.train.config import TrainConfig


def resolve_precision(precision: str) -> str:
    """The mixed precision a training runs with: ``precision`` itself, except "auto", which is
    bf16 on GPUs that support it and on CPUs where a bf16 matrix product beats an fp32 one
    (timed once per process), else no."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_bf16_is_faster() else "no"


@functools.cache
def cpu_bf16_is_faster(size: int = 256, repeats: int = 4) -> bool:
    """Whether a ``size`` x ``size`` matrix product takes less time in bf16 than in fp32 on this
    CPU (the best of ``repeats``, after a warm-up). CPUs without native bf16 emulate it, far more
    slowly than fp32."""
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


def check_training_file(path: Path, layout: Layout) -> None:
    """Chunked/latent data; for ``--layout raw`` a plain corpus (one chunk per document) too."""
    if not is_chunked_file(path) and layout is not Layout.RAW:
        raise BoltError(
            f"{path}: a plain corpus has no latents; --layout {layout.value} needs "
            "`bolt synthesize` or `bolt estep` output (or use --layout raw)."
        )


def training_data(
    config: TrainConfig,
    data_path: Path,
    tokenizer,
    markers: MarkerIds,
    store_directory: Path,
    token_cache: Path | None = None,
    builds: bool = True,
    workers: int = 1,
) -> tuple[Sequence[TokenizedDocument], int]:
    """The documents to render (read from the token store as they are needed) and the tokens of one epoch.

    The store lives in ``store_directory`` or, with ``token_cache``, in a directory of the
    cache named after the data's sha256 and the tokenizer; ``builds``: this process builds
    it (with ``workers`` tokenising processes), the others wait for it.
    """
    layout = Layout(config.layout)
    key = StoreKey.of(data_path, tokenizer)
    directory = token_cache / key.name if token_cache is not None else store_directory
    store = open_token_store(
        data_path,
        tokenizer,
        directory,
        key,
        build=builds,
        workers=workers,
        require_latents=layout.needs_latents and layout is not Layout.PURE,
    )
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


RESUME_IGNORES = ("batch_size", "grad_accum")
"""Config fields a run may change and still be the same run: the global batch is what counts (``resume_identity``)."""


def read_checkpoint_state(directory: Path) -> dict | None:
    """A checkpoint's state.json, or None where it is missing or unreadable (a checkpoint an older bolt
    was writing when it was killed)."""
    try:
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("step"), int) else None


def _checkpoints(output: Path) -> list[Path]:
    """The checkpoint directories ``step-N``, newest first."""
    found = (p for p in (output / "checkpoints").glob("step-*") if p.is_dir() and p.name.split("-")[1].isdigit())
    return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def _clean_checkpoints(output: Path) -> None:
    """Remove what killed writers left of checkpoints (main process only, before any process reads
    them): temporary checkpoints ``.step-N.tmp-HOST-PID`` whose writer is gone, and checkpoints
    without a readable state.json (an older bolt wrote state.json last, in place), with a warning."""
    remove_stale_temporaries_in(output / "checkpoints")
    for checkpoint in _checkpoints(output):
        if read_checkpoint_state(checkpoint) is None:
            warnings.warn(
                f"{checkpoint} is incomplete (no readable state.json: its writer was killed); removed it.", stacklevel=3
            )
            shutil.rmtree(checkpoint, ignore_errors=True)


def _latest_checkpoint(output: Path, identity: dict) -> tuple[Path, dict] | None:
    """The newest complete checkpoint of a run with the same config and data, and its state, if any."""
    for checkpoint in _checkpoints(output):
        state = read_checkpoint_state(checkpoint)
        if state is None:
            continue
        if state.get("identity") != identity:
            warnings.warn(
                f"{checkpoint} was saved with another config or other data; training starts afresh.", stacklevel=3
            )
            return None
        return checkpoint, state
    return None


def resume_identity(config: TrainConfig, data_path: Path, windows_per_step: int) -> dict:
    """What a checkpoint must match to be resumed.

    The per-process batch and accumulation are left out and the global batch kept, so a
    run checkpointed by 2 processes x batch 2 resumes in 1 process x batch 4 (and back).
    """
    fields = {k: v for k, v in config_to_json(config).items() if k not in RESUME_IGNORES}
    return {"config": fields, "windows_per_step": windows_per_step, "data_sha256": file_sha256(data_path)}


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's inductor backend would find for CPU code ($CXX, g++,
    clang++ or c++ on the PATH), or None."""
    return next(
        (
            found
            for name in (os.environ.get("CXX", ""), "g++", "clang++", "c++")
            if name and (found := shutil.which(name))
        ),
        None,
    )


def check_compile_possible() -> None:
    """``torch.compile``'s default backend (inductor) writes C++ for CPUs: without a GPU, refuse
    before any work where no C++ compiler is on the PATH, instead of failing at the first step."""
    if not torch.cuda.is_available() and cpp_compiler() is None:
        raise BoltError(
            "--compile on a CPU needs a C++ compiler (g++ or clang++, or $CXX) for torch.compile's inductor backend; "
            "install one or drop --compile."
        )


REPORT_TO_ENVIRONMENT = "BOLT_REPORT_TO"
"""Trackers for every training of a process and its workers (``bolt em --report-to``), when ``train``'s
``report_to`` is not given."""
TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "trackio", "swanlab", "all")


def train(
    config: TrainConfig,
    data_path: Path,
    output: Path,
    token_cache: Path | None = None,
    tokenize_workers: int = 1,
    compile: bool = False,
    overwrite: bool | None = None,
    strict: bool = False,
    report_to: str | None = None,
    gradient_checkpointing: bool = False,
) -> dict:
    """Train and save an HF model directory at ``output``; resumes from its checkpoints.

    ``output`` must not exist, be empty, or be a run directory of a training with the same
    config (``RunDir.claim``); a training of another config there is replaced only with
    ``overwrite`` (only what bolt wrote: its model files, checkpoints, token store and metrics).
    A finished run is trusted only where its model files still have the size and sha256 the
    manifest records; a damaged one is trained again. The final model is saved and recorded
    as complete before the checkpoints go, so a kill at any point leaves a run that a rerun
    resumes or skips. A training that fails leaves no directory it created, unless a checkpoint
    is there to resume from.

    The token store is ``output/tokens/`` (removed when training completes) or, with
    ``token_cache``, a directory of that shared cache (kept for other runs on the same data);
    the main process builds it with ``tokenize_workers`` processes where it is missing.

    ``compile`` runs the forward and backward passes through ``torch.compile`` (inductor):
    the same model and optimiser, other kernels. It is not part of the run's identity (a
    finished run is not retrained for it), like ``tokenize_workers``; the summary records it.
    Made for GPUs: compiling slows the start, and on a CPU it gains little (docs/SCALING.md
    gives the times).

    A warm-up as long as the run or longer (the learning rate never reaches ``lr``) is warned
    about (``schedule_warning``), and with ``strict`` refused before the first step.

    ``gradient_checkpointing`` recomputes each layer's activations in the backward pass instead of
    keeping them (less memory, about a third more compute, the same steps); not part of the run's
    identity. Before the first step, a training that will likely not fit in memory is warned about
    (``memory_warning``; with ``strict``, refused).

    ``report_to`` (or ``$BOLT_REPORT_TO``): accelerate's experiment trackers, comma-separated
    (tensorboard, wandb, mlflow, ... or all), fed the loss, learning rate and throughput at every
    logged step; TensorBoard writes under ``output/tracking/``. Not part of the run's identity.
    """
    config.validate()
    report_to = report_to or os.environ.get(REPORT_TO_ENVIRONMENT) or None
    trackers = [t.strip() for t in report_to.split(",") if t.strip()] if report_to else []
    unknown = [t for t in trackers if t not in TRACKERS]
    if unknown:
        raise BoltError(
            f"unknown --report-to {', '.join(unknown)}; choose from {', '.join(TRACKERS)} (comma-separated)."
        )
    if compile:
        check_compile_possible()
    output, data_path = Path(output), Path(data_path)
    run = RunDir(output)
    if output.resolve() == data_path.resolve() or output.resolve() in data_path.resolve().parents:
        raise BoltError(f"{output}: holds the training data {data_path}; name another output directory with -o.")
    replace = run.claim(
        "train", config, overwrite=overwrite, ignore=RESUME_IGNORES, replace=False
    )  # every process checks; the main one replaces
    if not replace and run.is_complete(config, inputs={"data": data_path}) and (output / "config.json").exists():
        problems = run.verify_outputs()
        if not problems:
            for leftover in ("checkpoints", "tokens"):  # a kill after the manifest was complete, before these went
                shutil.rmtree(output / leftover, ignore_errors=True)
            return run.read_manifest()["summary"]
        warnings.warn(f"{problems[0]}: training again.", stacklevel=2)
    created = not output.exists()
    fresh = created or not any(output.iterdir())  # everything in it will be this training's
    try:
        return _train(
            config,
            data_path,
            output,
            run,
            replace,
            token_cache,
            tokenize_workers,
            compile,
            strict,
            trackers,
            report_to,
            gradient_checkpointing,
        )
    except BaseException as exc:
        if os.environ.get("RANK", "0") == "0":
            run.fail(exc)  # a directory kept for its checkpoints says why it stopped
        if fresh and os.environ.get("RANK", "0") == "0" and not any((output / "checkpoints").glob("step-*")):
            # nothing to resume from: leave no directory this training created, and an empty one empty
            if created:
                shutil.rmtree(output, ignore_errors=True)
            elif output.is_dir():
                for entry in output.iterdir():
                    remove_path(entry)
        raise


def training_memory_bytes(model, batch_size: int, seq_len: int, gradient_checkpointing: bool = False) -> int:
    """A rough peak of one process's training memory in fp32: weights, gradients and AdamW's two
    moments (16 bytes a parameter), the activations a backward pass keeps (about 10 hidden-sized and
    3 intermediate-sized values per token and layer; one hidden-sized value with gradient
    checkpointing, plus one layer recomputed), and the logits over the vocabulary with their
    log-softmax and gradient (3 values per token and vocabulary entry)."""
    config = model.config
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    vocabulary = int(getattr(config, "vocab_size", 0) or 0)
    tokens = batch_size * seq_len
    per_layer = tokens * (10 * hidden + 3 * intermediate) * 4
    activations = tokens * hidden * 4 * layers + per_layer if gradient_checkpointing else per_layer * layers
    return 16 * sum(p.numel() for p in model.parameters()) + activations + 3 * tokens * vocabulary * 4


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory where the training runs: the GPU's (torch), or the machine's MemAvailable (Linux)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def memory_warning(
    model,
    config: TrainConfig,
    device: torch.device,
    processes_here: int,
    gradient_checkpointing: bool,
    strict: bool = False,
) -> None:
    """Warn (an error with ``strict``) before the first step when the training will likely not fit in memory."""
    from bolt.core.quality import warn

    available = available_memory_bytes(device)
    if available is None:
        return
    need = training_memory_bytes(model, config.batch_size, config.seq_len, gradient_checkpointing) * (
        processes_here if device.type == "cpu" else 1
    )
    if need <= available:
        return
    fixes = "lower --batch-size and raise --grad-accum (the same batch per step), or lower --seq-len"
    if not gradient_checkpointing:
        fixes += ", or add --gradient-checkpointing (recompute activations in the backward pass)"
    warn(
        f"this training needs about {need / 2**30:.1f} GiB "
        f"({config.batch_size} x {config.seq_len} tokens per micro-batch"
        f"{f' in each of {processes_here} processes' if processes_here > 1 and device.type == 'cpu' else ''}) "
        f"and {available / 2**30:.1f} GiB are free "
        f"{'on the GPU' if device.type == 'cuda' else 'on this machine'}: it will likely run out of memory; {fixes}",
        strict,
        "nothing was trained yet",
    )


def peak_lr(config: TrainConfig, total_steps: int) -> float:
    """The highest learning rate the schedule (linear warm-up, then cosine decay) reaches in ``total_steps`` steps."""
    if config.warmup_steps <= 0 or total_steps > config.warmup_steps:
        return config.lr
    return config.lr * max(0, total_steps - 1) / config.warmup_steps


def schedule_warning(config: TrainConfig, total_steps: int, strict: bool = False) -> None:
    """Warn (with ``strict``: fail) when the warm-up is as long as the run: the peak learning rate is never reached."""
    from bolt.core.quality import warn

    if config.warmup_steps and config.warmup_steps >= total_steps:
        peak = peak_lr(config, total_steps)
        warn(
            f"the warm-up ({config.warmup_steps} steps) is longer than the run ({total_steps} steps): "
            "the learning rate never reaches its peak "
            f"--lr {config.lr:g} and tops out at {peak:.3g} ({100 * peak / config.lr:.1f}% of it); "
            f"lower --warmup-steps (e.g. to {max(1, total_steps // 10)}) "
            "or train longer (--steps, --epochs)",
            strict,
        )


def new_accelerator(**options: Any):
    """An ``accelerate.Accelerator`` with a fresh process-wide state.

    accelerate keeps one state per process, fixed by the first Accelerator: a later training in
    the same process (a notebook, the demo with --workers 1, fine-tuning after evaluation) would
    inherit that training's precision, or fail to change it. The process group is kept.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(cpu=not torch.cuda.is_available(), **options)


@dataclass(frozen=True)
class Steps:
    """Where an optimisation starts and ends, and what each optimiser step does with its gradients."""

    first: int
    """Steps already taken (a resumed run)."""
    total: int
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    clip: float = 1.0
    """Gradient-norm clipping threshold."""


def optimise(
    accelerator,
    model,
    forward,
    optimizer,
    scheduler,
    micro_batches: Iterator[dict[str, torch.Tensor]],
    steps: Steps,
    progress,
    after_step: Callable[[int, float], None] = lambda step, loss: None,
) -> float:
    """The training loop of every bolt training (warm starts, M-steps, baselines, fine-tuning):
    ``steps.grad_accum`` micro-batches (keyword arguments of ``forward``, labels included) per
    optimiser step, gradients clipped when they are synchronised, the schedule stepped once per
    optimiser step. ``after_step(step, loss)`` logs and checkpoints; returns the last step's loss
    (averaged over micro-batches and processes)."""
    step, last_loss = steps.first, float("nan")
    while step < steps.total:
        losses = []
        for _ in range(steps.grad_accum):
            batch = next(micro_batches)
            with accelerator.accumulate(model):
                loss = forward(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), steps.clip)
                optimizer.step()
                optimizer.zero_grad()
            losses.append(loss.detach())
        scheduler.step()
        step += 1
        last_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
        progress.update(1)
        progress.set_postfix(loss=f"{last_loss:.3f}")
        after_step(step, last_loss)
    return last_loss


def _train(
    config: TrainConfig,
    data_path: Path,
    output: Path,
    run: RunDir,
    replace: bool,
    token_cache: Path | None,
    tokenize_workers: int,
    compile: bool,
    strict: bool = False,
    trackers: list[str] | None = None,
    report_to: str | None = None,
    gradient_checkpointing: bool = False,
) -> dict:
    from accelerate.utils import broadcast_object_list
    from transformers import get_cosine_schedule_with_warmup

    layout = Layout(config.layout)
    precision = resolve_precision(config.precision)
    # DDP/FSDP and their settings come from the launcher (torchrun, accelerate launch/config).
    accelerator = new_accelerator(
        mixed_precision=None
        if config.precision == "no"
        else precision,  # "no": the launcher's setting; auto decides itself
        gradient_accumulation_steps=config.grad_accum,
        log_with=trackers or None,
        project_dir=str(output / "tracking") if trackers else None,
    )
    if (
        os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
        and accelerator.distributed_type.value != "FSDP"
    ):
        warnings.warn(
            f"FSDP was asked for, but accelerate runs {accelerator.distributed_type.value} (FSDP needs GPUs): "
            "training without sharding.",
            stacklevel=2,
        )
    check_training_file(data_path, layout)
    if accelerator.is_main_process:
        if replace:
            run.remove_written()  # a training of another config, replaced with --overwrite
        run.start(
            "train", config, inputs={"data": data_path}, seed=config.seed
        )  # from here the directory is marked as bolt's
    if trackers:
        try:
            hparams = {
                key: value
                for key, value in config_to_json(config).items()
                if isinstance(value, (int, float, str, bool))
            }
            accelerator.init_trackers(output.name, config=hparams)
        except (ImportError, ModuleNotFoundError, ValueError) as exc:
            raise BoltError(
                f"--report-to {report_to}: {exc}. Install the tracker's package (pip install tensorboard, wandb, ...)."
            ) from None
    accelerator.wait_for_everyone()
    # every process saves its part of a checkpoint into one temporary directory named after the main process
    writer = broadcast_object_list([writer_tag()])[0]
    model, tokenizer = load_model_and_tokenizer(config.model, seed=config.seed, from_scratch=config.from_scratch)
    add_latent_tokens(tokenizer, model)
    markers = marker_ids(tokenizer)
    if config.seq_len > context_window(model):
        raise BoltError(f"--seq-len {config.seq_len} exceeds the model's context window ({context_window(model)}).")
    documents, tokens_per_epoch = training_data(
        config,
        data_path,
        tokenizer,
        markers,
        output / "tokens",
        token_cache,
        builds=accelerator.is_main_process,
        workers=tokenize_workers,
    )
    if tokens_per_epoch < config.seq_len:
        raise BoltError(
            f"{data_path}: only {tokens_per_epoch} tokens in one epoch, "
            f"fewer than one --seq-len {config.seq_len} window. Lower --seq-len or add data."
        )
    world = accelerator.num_processes
    windows_per_step = config.batch_size * config.grad_accum * world
    total_steps = plan_steps(config, tokens_per_epoch, windows_per_step)
    if accelerator.is_main_process:
        schedule_warning(config, total_steps, strict)
    elif strict and config.warmup_steps >= total_steps:
        raise BoltError("the warm-up is longer than the run (see the main process)")

    if gradient_checkpointing:
        model.config.use_cache = False
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.x's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    memory_warning(
        model,
        config,
        accelerator.device,
        accelerator.num_processes // max(1, getattr(accelerator.state, "num_machines", 1) or 1),
        gradient_checkpointing,
        strict,
    )
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

    step = 0
    identity = resume_identity(config, data_path, windows_per_step)
    if accelerator.is_main_process:
        _clean_checkpoints(output)
    accelerator.wait_for_everyone()
    found = _latest_checkpoint(output, identity)
    if found is not None:
        checkpoint, state = found
        accelerator.load_state(str(checkpoint))
        step = state["step"]
        if accelerator.is_main_process:
            run.truncate_metrics(step)  # the steps after the checkpoint are logged again
    elif accelerator.is_main_process:
        run.metrics_path.unlink(missing_ok=True)  # a fresh start: no lines from an earlier, different run
    stream = window_stream(documents, config, markers)
    for _ in range(step * windows_per_step):
        next(stream)

    model.train()
    progress = progress_bar(
        total=total_steps,
        initial=step,
        desc=f"train {output.name}",
        unit="step",
        disable=None if accelerator.is_main_process else True,
    )
    started, tokens_seen = time.monotonic(), 0

    def windows() -> Iterator[dict[str, torch.Tensor]]:
        """This process's share of each micro-batch: every process renders the same window stream."""
        while True:
            batch = [next(stream) for _ in range(config.batch_size * world)]
            mine = torch.tensor(batch[accelerator.process_index :: world], dtype=torch.long, device=accelerator.device)
            yield {"input_ids": mine, "labels": mine}

    def after_step(step: int, loss: float) -> None:
        nonlocal tokens_seen
        tokens_seen += windows_per_step * config.seq_len
        if accelerator.is_main_process and (step % config.log_every == 0 or step == total_steps):
            elapsed = time.monotonic() - started
            logged = {
                "loss": loss,
                "lr": scheduler.get_last_lr()[0],
                "tokens": step * windows_per_step * config.seq_len,
                "tokens_per_second": tokens_seen / max(elapsed, 1e-9),
            }
            run.log_metrics(step=step, **logged)
            if trackers:
                accelerator.log(logged, step=step)
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total_steps:
            _save_checkpoint(accelerator, output, step, identity, writer)

    last_loss = optimise(
        accelerator,
        model,
        forward,
        optimizer,
        scheduler,
        windows(),
        Steps(first=step, total=total_steps, grad_accum=config.grad_accum, clip=config.clip),
        progress,
        after_step,
    )
    progress.close()
    if trackers:
        accelerator.end_training()

    accelerator.wait_for_everyone()
    summary = {
        "steps": total_steps,
        "final_loss": last_loss,
        "peak_lr": peak_lr(config, total_steps),
        "warmup_longer_than_run": bool(config.warmup_steps and config.warmup_steps >= total_steps),
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
        saving = time.time_ns()
        unwrapped.save_pretrained(output, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(output)
        written = [
            path
            for path in sorted(output.iterdir())
            if path.is_file()
            and not is_temporary(path)
            and path.name not in ("manifest.json", "metrics.jsonl")
            and path.stat().st_mtime_ns >= saving - 2_000_000_000
        ]
        for path in written:
            fsync_path(path)
        run.record_outputs(written)
        run.finish(**summary)  # complete and recorded before the checkpoints go: a kill from here on loses nothing
        shutil.rmtree(output / "checkpoints", ignore_errors=True)
        shutil.rmtree(output / "tokens", ignore_errors=True)  # the model directory stays a plain HF directory
    accelerator.wait_for_everyone()
    return summary


def _save_checkpoint(accelerator, output: Path, step: int, identity: dict, writer: str) -> None:
    """Save a resumable checkpoint at ``OUT/checkpoints/step-N`` atomically: every process writes
    into ``.step-N.tmp-HOST-PID`` (the main process's), the main one adds state.json, flushes
    it all to the disk and renames the directory into place, then removes older checkpoints.
    A kill leaves either the whole checkpoint or a temporary that the next run removes."""
    checkpoints = output / "checkpoints"
    directory = checkpoints / f"step-{step:07d}"
    temporary = checkpoints / temporary_name(directory.name, writer)
    if accelerator.is_main_process:
        remove_path(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / "state.json").write_text(json.dumps({"step": step, "identity": identity}), encoding="utf-8")
        for path in temporary.rglob("*"):
            if path.is_file():
                fsync_path(path)
        remove_path(directory)
        os.replace(temporary, directory)
        fsync_path(checkpoints)
        for old in checkpoints.glob("step-*"):
            if old != directory:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
