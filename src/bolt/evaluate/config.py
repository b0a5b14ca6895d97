"""The settings of ``bolt eval``'s likelihoods and answers.

Kept apart from the evaluation so that the CLI reads their defaults and help without loading torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bolt.errors import BoltError

DEFAULT_ANSWER_PATTERN = r"-?\d+(?:\.\d+)?"


@dataclass
class EvalConfig:
    """What ``bolt eval`` measures."""

    iwae_samples: list[int] = field(default_factory=lambda: [1, 2, 4])
    """n values of the IWAE bound, comma-separated (1 is the ELBO; max(n) posterior samples per chunk)."""
    uniform_units: int = 8
    """Sentences per chunk for the bounds."""
    max_latent_tokens: int = 256
    """Latent budget per sample in the bounds."""
    max_answer_tokens: int = 128
    """Generation budget per question, latent and answer together."""
    batch_prompts: int = 8
    """Chunks sampled together for the bounds, questions answered together."""
    seed: int = 0
    answer_pattern: str = DEFAULT_ANSWER_PATTERN
    """Regex; its first match after EoL (its first group, if it has one) is the answer, compared with the gold
    answer as text."""

    def validate(self) -> None:
        if self.batch_prompts < 1:
            raise BoltError(f"--batch-prompts must be at least 1, got {self.batch_prompts}.")
        if not self.iwae_samples or min(self.iwae_samples) < 1:
            raise BoltError(f"--iwae-samples must be positive integers, got {self.iwae_samples}.")
        for flag, value in (
            ("--uniform-units", self.uniform_units),
            ("--max-latent-tokens", self.max_latent_tokens),
            ("--max-answer-tokens", self.max_answer_tokens),
        ):
            if value < 1:
                raise BoltError(f"{flag} must be at least 1, got {value}.")
        try:
            re.compile(self.answer_pattern)
        except re.error as exc:
            raise BoltError(f"--answer-pattern is not a valid regex: {exc}.") from None
