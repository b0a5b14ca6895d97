"""The settings of the E-step (``bolt estep``, the E-steps of ``bolt em`` and the demo) and of sampling.

Kept apart from the samplers so that the CLI reads their defaults and help without loading torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bolt.core.choices import ESTEP_BACKENDS, PROPOSALS, EStepBackend, Proposal
from bolt.errors import BoltError


@dataclass
class SamplingConfig:
    """How continuations are drawn."""

    temperature: float = 1.0
    """Sampling temperature (1: the paper's pure ancestral sampling)."""
    top_p: float = 1.0
    """Nucleus truncation (1: none)."""
    top_k: int = 0
    """Top-k truncation (0: none)."""
    max_new_tokens: int = 1024
    """Latent length budget per sample, in tokens (the paper: 1024)."""
    greedy: bool = False
    """Take the most likely token (evaluation's decoding); log-probs are then the model's."""

    def validate(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise BoltError(
                f"--temperature must be a number above 0, got {self.temperature}: the E-step samples its candidates "
                "(a small value such as 0.1 comes close to greedy decoding; "
                "the importance weights stay exact at any temperature)."
            )
        if not 0 < self.top_p <= 1:
            raise BoltError(f"--top-p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0 or self.max_new_tokens < 1:
            raise BoltError(
                f"--top-k must be >= 0 and --max-new-tokens >= 1, got {self.top_k} and {self.max_new_tokens}."
            )


@dataclass
class EStepConfig:
    """Settings of one E-step."""

    samples: int = 4
    """K, candidate latents per chunk (the paper: 4)."""
    seed: int = 0
    """Seeds every chunk's sampling and resampling (with the document id and chunk index)."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Temperature 1, no truncation: the paper's pure ancestral sampling."""
    batch_prompts: int = 8
    """Chunks sampled together (B chunks: B x K rows)."""
    max_batch_tokens: int = 16384
    """Token budget of one scoring forward pass."""
    context_window: int | None = None
    """Longest sequence the model may see; default: the model's max_position_embeddings."""
    keep_candidates: bool = False
    """Store all K candidates and their scores."""
    backend: EStepBackend = "hf"
    """Engine that samples and scores: hf (transformers) or vllm (GPU; pip install 'bolt-latent[vllm]')."""
    proposal: Proposal = "posterior"
    """Where candidates come from: posterior (the paper: the model as q(Z|X), prompt ... SoL EoL X SoL
    POST) or prior (the model's p(Z|prefix), prompt ... SoL PRIOR; weights become p(X|Z)). Both are
    proposals of the same importance sampler: weights and bounds stay exact either way."""

    def validate(self) -> None:
        if self.samples < 1:
            raise BoltError(f"-k/--samples must be at least 1, got {self.samples}.")
        if self.batch_prompts < 1:
            raise BoltError(f"--batch-prompts must be at least 1, got {self.batch_prompts}.")
        self.sampling.validate()
        if self.backend not in ESTEP_BACKENDS:
            raise BoltError(f"unknown --backend {self.backend!r}; choose from {', '.join(ESTEP_BACKENDS)}.")
        if self.proposal not in PROPOSALS:
            raise BoltError(f"unknown --proposal {self.proposal!r}; choose from {', '.join(PROPOSALS)}.")
