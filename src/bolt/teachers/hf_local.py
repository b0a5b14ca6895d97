"""A teacher that runs any Hugging Face causal LM on disk (``--teacher hf``).

Chat models get the prompt through their own chat template; a model without one gets
the system and user text joined, ending in "Thoughts:". Decoding goes through the same
batched KV-cache sampler as the E-step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bolt.core.modeling import load_model, load_tokenizer
from bolt.estep.config import SamplingConfig
from bolt.estep.sampling import sample_continuations
from bolt.teachers.base import LatentRequest
from bolt.teachers.prompts import load_template


class HFTeacher:
    name = "hf"

    def __init__(
        self,
        model: str | Path,
        prompt_file: str | Path | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        self.model_path = str(model)
        self.template = load_template(prompt_file)
        self.tokenizer = load_tokenizer(model)
        self.sampling = SamplingConfig(
            max_new_tokens=max_new_tokens, temperature=temperature or 1.0, greedy=temperature == 0.0
        )
        self.seed = seed
        self.dtype = dtype
        self._model = None
        self.last_truncated: list[bool] = []
        """Per latent of the last ``write_latents`` call: whether it was cut at ``max_new_tokens``."""

    @property
    def model(self):
        """The model, loaded on first use: a sharded run's driver only describes the teacher."""
        if self._model is None:
            # a GPU when torch sees one
            self._model = load_model(self.model_path, dtype=self.dtype, device="auto").eval()
        return self._model

    def stop_ids(self) -> set[int]:
        stop = {self.tokenizer.eos_token_id}
        generation_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        stop.update(
            generation_eos
            if isinstance(generation_eos, list)
            else [generation_eos]
            if generation_eos is not None
            else []
        )
        return stop

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model_path,
            "template": self.template.version,
            "max_new_tokens": self.sampling.max_new_tokens,
            "temperature": 0.0 if self.sampling.greedy else self.sampling.temperature,
        }

    def prompt_ids(self, request: LatentRequest) -> list[int]:
        messages = self.template.messages(request.prefix, request.text)
        if getattr(self.tokenizer, "chat_template", None):
            rendered = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return self.tokenizer.encode(rendered, add_special_tokens=False)
        plain = "\n\n".join(message["content"] for message in messages) + "\n\nThoughts:"
        return self.tokenizer.encode(plain, add_special_tokens=True)

    def write_latents(self, requests: list[LatentRequest]) -> list[str]:
        prompts = [self.prompt_ids(request) for request in requests]
        rngs = [np.random.default_rng([self.seed, request.chunk_index, len(request.text)]) for request in requests]
        samples = sample_continuations(
            self.model,
            prompts,
            1,
            self.stop_ids(),
            self.sampling,
            None if self.sampling.greedy else rngs,
            pad_id=self.tokenizer.pad_token_id,
        )
        # cut at max_new_tokens, not ended by the model
        self.last_truncated = [not sample[0].finished for sample in samples]
        return [self.tokenizer.decode(sample[0].token_ids, skip_special_tokens=True).strip() for sample in samples]
