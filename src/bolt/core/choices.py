"""The named choices of bolt's configs, in one place: the configs' field types and the CLI's
``choices`` both come from here (``typing.get_args``), so a new choice cannot reach one and not
the other. No heavy imports: the CLI reads this before any stage loads torch."""

from __future__ import annotations

from typing import Literal, get_args

LayoutName = Literal["random", "joint", "posterior", "prior-only", "posterior-only", "pure", "raw"]
"""How latents and text are put together (``bolt.core.layouts.Layout``)."""
Precision = Literal["no", "bf16", "fp16", "auto"]
"""Mixed precision of a training."""
Proposal = Literal["posterior", "prior"]
"""Where the E-step's candidates come from: the model's q(Z | X) (the paper) or its prior p(Z | prefix)."""
MStepData = Literal["bootstrap", "teacher+bootstrap"]
"""What every M-step trains on."""
EStepBackend = Literal["hf", "vllm"]
"""The engine that samples and scores the E-step."""
Method = Literal["latent", "wrap", "wrap-cot"]
"""What a teacher writes: latent thoughts per chunk, or a rephrasing per document."""
ExecutorKind = Literal["local", "ray"]
"""Where shards run."""

LAYOUTS: tuple[str, ...] = get_args(LayoutName)
PRECISIONS: tuple[str, ...] = get_args(Precision)
PROPOSALS: tuple[str, ...] = get_args(Proposal)
M_STEP_DATA: tuple[str, ...] = get_args(MStepData)
ESTEP_BACKENDS: tuple[str, ...] = get_args(EStepBackend)
METHODS: tuple[str, ...] = get_args(Method)
EXECUTORS: tuple[str, ...] = get_args(ExecutorKind)
