"""The settings of one training (``bolt train``, the warm start, M-steps and baselines).

Kept apart from the training loop so that the CLI reads its defaults and help without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bolt.core.choices import LAYOUTS, PRECISIONS, LayoutName, Precision
from bolt.errors import BoltError


@dataclass
class TrainConfig:
    """One training run (an M-step, a warm start or a baseline)."""

    model: str = "tiny"
    """HF model directory, Hugging Face hub id (org/name), or a preset trained from scratch: tiny, small, world."""
    from_scratch: bool = False
    """Re-initialise the model's weights from its config (keeps its tokenizer and architecture)."""
    layout: LayoutName = "random"
    """How latents and text are put together (docs/FORMATS.md): random is the paper's mix of the joint
    and posterior forms; raw is the text alone."""
    raw_ratio: float = 0.0
    """Share of documents shown without latents each epoch (mix-in-raw)."""
    seq_len: int = 512
    """Packed window length in tokens (the paper: 2048)."""
    batch_size: int = 8
    """Windows per process per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    steps: int | None = None
    """Optimiser steps (give one of steps, tokens, epochs; none: 1 epoch)."""
    tokens: int | None = None
    """Training tokens, rounded up to whole steps."""
    epochs: float | None = None
    """Passes over the data, rounded up to whole steps."""
    lr: float = 1e-4
    """Peak learning rate of AdamW, reached after the warm-up and decayed by a cosine (the paper: 1e-4)."""
    warmup_steps: int = 0
    """Linear warm-up steps (the paper: 1000)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    clip: float = 1.0
    """Gradient-norm clipping threshold."""
    precision: Precision = "no"
    """Mixed precision: no (the launcher's setting, else none), bf16, fp16, or auto: bf16 where this
    device computes it faster than fp32 (GPUs with bf16, CPUs with AVX-512 BF16 or AMX; on CPUs
    without them bf16 is far slower)."""
    seed: int = 0
    """Seed of the initialisation (from scratch), the layouts' coin flips and the data order."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every N steps (0: only the final model)."""
    log_every: int = 10
    """Append a metrics.jsonl line every N steps."""

    def validate(self) -> None:
        if self.layout not in LAYOUTS:
            raise BoltError(f"unknown --layout {self.layout!r}; choose from {', '.join(LAYOUTS)}.")
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
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise BoltError(f"--{name} must be positive, got {value}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise BoltError(f"--lr must be a positive number, got {self.lr}.")
        for name, value in (("weight-decay", self.weight_decay), ("clip", self.clip)):
            if not (value >= 0 and math.isfinite(value)):
                raise BoltError(f"--{name} must be a finite number >= 0, got {value}.")
        for name, value in (
            ("warmup-steps", self.warmup_steps),
            ("checkpoint-every", self.checkpoint_every),
            ("seed", self.seed),
        ):
            if value < 0:
                raise BoltError(
                    f"--{name} must be >= 0, got {value}"
                    + (" (0: only the final model is saved)." if name == "checkpoint-every" else ".")
                )
        if self.log_every < 1:
            raise BoltError(f"--log-every must be at least 1, got {self.log_every}.")
