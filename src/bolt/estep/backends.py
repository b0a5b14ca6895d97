"""What the E-step needs from an inference engine: sample latents with their log q, and
score sequences for log p. Each engine sits behind this one small protocol.

    hf    transformers on CPU or one GPU (bolt.estep.sampling, bolt.estep.scoring): the reference
    vllm  vLLM's offline engine on GPUs (bolt.estep.vllm_backend, optional extra ``vllm``)

A backend is chosen by name (``make_backend``) and built inside the process that uses it,
so an E-step shard on a Ray worker loads its own engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from bolt.core.choices import ESTEP_BACKENDS
from bolt.core.modeling import context_window
from bolt.errors import BoltError
from bolt.estep.config import SamplingConfig
from bolt.estep.sampling import Sample, sample_continuations
from bolt.estep.scoring import score_shared_beginnings

BACKENDS = ESTEP_BACKENDS


@runtime_checkable
class LatentBackend(Protocol):
    """Sampling and scoring for the E-step."""

    context_window: int
    """Longest token sequence the engine accepts."""

    def sample_latents(
        self,
        prompts: list[list[int]],
        k: int,
        stop_ids: set[int],
        sampling: SamplingConfig,
        rngs: list[np.random.Generator],
    ) -> list[list[Sample]]:
        """K samples per prompt (``rngs``: one per row, prompt-major), each with its summed log-prob
        under the distribution actually sampled from (after temperature, top-k, top-p)."""
        ...

    def score_sequences(self, sequences: list[list[int]], starts: list[int]) -> list[float]:
        """Sum of log p(ids[t] | ids[:t]) over t >= starts[i], under the model's own distribution."""
        ...


class HFBackend:
    """The transformers model in this process (bolt's reference implementation)."""

    def __init__(self, model, pad_id: int, max_batch_tokens: int = 16384):
        self.model = model.eval()
        self.pad_id = pad_id
        self.max_batch_tokens = max_batch_tokens
        self.context_window = context_window(model)

    def sample_latents(self, prompts, k, stop_ids, sampling, rngs):
        return sample_continuations(self.model, prompts, k, stop_ids, sampling, rngs, pad_id=self.pad_id)

    def score_sequences(self, sequences, starts):
        # the K candidates of a chunk share BOS + prefix: run it once per chunk, score only SoL ... text
        return score_shared_beginnings(self.model, sequences, starts, self.max_batch_tokens, pad_id=self.pad_id)


def make_backend(
    name: str,
    model_dir: str | Path,
    tokenizer,
    dtype: torch.dtype = torch.float32,
    max_batch_tokens: int = 16384,
    device: str = "auto",
) -> LatentBackend:
    """Load the model at ``model_dir`` into the engine called ``name`` (``device``: the HF engine's, see
    ``modeling.resolve_device``)."""
    if name == "hf":
        from bolt.core.modeling import load_model

        return HFBackend(load_model(model_dir, dtype=dtype, device=device), tokenizer.pad_token_id, max_batch_tokens)
    if name == "vllm":
        from bolt.estep.vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, dtype=dtype, max_batch_tokens=max_batch_tokens)
    raise BoltError(f"unknown --backend {name!r}; choose from {', '.join(BACKENDS)}.")
