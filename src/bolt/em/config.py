"""The settings of ``bolt em``: corpus, loop, trainings, evaluations.

Kept apart from the engine so that the CLI reads their defaults and help without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bolt.em.loop import LoopConfig
from bolt.errors import BoltError
from bolt.evaluate.config import EvalConfig
from bolt.train.config import TrainConfig


@dataclass
class EMConfig:
    """``bolt em``: the BoLT loop on a corpus (or the embedded world), every model evaluated."""

    warm_start: str | None = None
    """Teacher latents (bolt.latents/1) for iteration 0. None: the embedded world (``world``)."""
    bootstrap: str | None = None
    """Corpus (raw or chunked) whose latents the model infers itself in iterations 1..N."""
    heldout: str | None = None
    """Held-out documents for NLL and IWAE bounds (optional)."""
    questions: str | None = None
    """Held-out questions (JSONL with prompt, answer) for latent-space accuracy (optional)."""
    loop: LoopConfig = field(default_factory=LoopConfig)
    prefix_chunks: int = 3
    """Context chunks for self-generated latents when the bootstrap corpus is raw (the paper: 3)."""
    seed: int = 0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            model="tiny", seq_len=256, batch_size=8, epochs=2.0, lr=3e-3, warmup_steps=10
        )
    )
    """Warm start and M-step settings (the paper: about 2 epochs each); ``train.model`` is the base model (preset
    or HF directory)."""
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(max_latent_tokens=128, max_answer_tokens=64))
    world: Any = None
    """With no corpus given, the embedded world's sizes (``bolt.apps.world.world.WorldConfig``): the
    application that sets it also hands ``run_em`` the ``prepare_inputs`` that writes its files."""
    workers: int = 1
    """E-steps and trainings side by side in this many processes (the chain itself is sequential; the K sweep is
    not run here)."""

    def validate(self) -> None:
        self.loop.validate()
        if (self.warm_start is None) != (self.bootstrap is None):
            raise BoltError("give both --warm-start and --bootstrap, or neither (to run on the embedded world).")
        if self.bootstrap is None and self.world is None:
            raise BoltError("give --warm-start and --bootstrap (or run `bolt em` without both, on the embedded world).")
        if self.bootstrap is None and self.loop.estep_folds > self.world.bootstrap_documents:
            raise BoltError(
                f"--estep-folds {self.loop.estep_folds} is more than the embedded world's "
                f"{self.world.bootstrap_documents} bootstrap documents; use at most that."
            )
        self.train.validate()
        self.eval.validate()
