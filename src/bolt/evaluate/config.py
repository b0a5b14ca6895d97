"""The settings of ``bolt eval``'s likelihoods and answers.

Kept apart from the evaluation so that the CLI reads their defaults and help without loading torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class FinetuneConfig:
    """One fine-tune-then-evaluate experiment."""

    task: str = "gsm8k_cot"
    """A task of `bolt eval --tasks`; its dataset's train split is the fine-tuning data."""
    data_dir: Path | None = None
    """DIR/<dataset>/{train,test}.jsonl (required: the fine-tuning data is local)."""
    seeds: int = 3
    """Repetitions with seeds --seed, --seed+1, ..."""
    first_seed: int = 0
    epochs: float = 1.0
    """Passes over the training split."""
    lr: float = 1e-5
    """AdamW learning rate."""
    batch_size: int = 8
    """Training examples per step."""
    max_train_examples: int | None = None
    """Fine-tune on the first N training examples only."""
    samples: int = 4
    """Sampled answers per test question (maj@k, pass@k)."""
    temperature: float = 0.6
    """Sampling temperature."""
    top_p: float = 0.9
    """Nucleus truncation."""
    limit: int | None = None
    """Test questions, the first N (none: all)."""
    max_gen_tokens: int | None = None
    """Generation budget per answer (none: the task's own)."""

    def validate(self) -> None:
        from bolt.evaluate.tasks import TASKS

        if self.task not in TASKS:
            raise BoltError(f"unknown task {self.task!r}; finetune-eval takes one of: {', '.join(TASKS)}.")
        if self.data_dir is None:
            raise BoltError(
                "finetune-eval needs --data-dir DIR with DIR/<dataset>/train.jsonl (the fine-tuning data) "
                "and test.jsonl."
            )
        if self.seeds < 1 or self.epochs <= 0 or self.lr <= 0 or self.batch_size < 1 or self.samples < 1:
            raise BoltError("--seeds, --epochs, --lr, --batch-size and --samples must be positive.")


@dataclass
class TaskRunConfig:
    """What ``bolt eval --tasks`` runs."""

    tasks: list[str] = field(default_factory=list)
    """Comma-separated: gsm8k_cot, math_cot, mmlu_stem_cot, world, each also with a _latent suffix."""
    data_dir: Path | None = None
    """Local data: DIR/<dataset>/{train,test}.jsonl with dataset gsm8k, math, mmlu_stem or world (none: the
    Hugging Face hub; the world task: its generator)."""
    limit: int | None = None
    """Questions per task, the first N of the test split (none: all)."""
    samples: int = 1
    """Answers per question; above 1 they are sampled and maj@k/pass@k reported (the world tasks; GSM8K,
    MATH and MMLU are lm-eval's tasks, graded as upstream on the first sample)."""
    temperature: float = 0.6
    """Sampling temperature with --samples > 1."""
    top_p: float = 0.9
    """Nucleus truncation with --samples > 1."""
    max_gen_tokens: int | None = None
    """Generation budget per answer (none: each task's own)."""
    batch_size: int = 8
    """Prompts generated together."""
    num_fewshot: int | None = None
    """Few-shot exemplars per prompt (none: each task's own: 8 for GSM8K, 4 for MATH and MMLU, 0 for the
    world); numbers comparable with published lm-eval ones keep the default."""
    math_timeout: float = 5.0
    """Seconds math-verify may spend grading one answer."""
    seed: int = 0

    def validate(self) -> None:
        from bolt.evaluate.tasks import TASKS

        unknown = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or unknown:
            raise BoltError(
                f"unknown task(s) {', '.join(unknown) or '(none given)'}; "
                f"--tasks takes a comma-separated list of: {', '.join(TASKS)}."
            )
        if (
            self.samples < 1
            or self.batch_size < 1
            or any(v is not None and v < 1 for v in (self.limit, self.max_gen_tokens))
        ):
            raise BoltError(
                "--samples, --limit, --batch-size and --max-gen-tokens must be at least 1, "
                f"got {self.samples}, {self.limit}, {self.batch_size}, {self.max_gen_tokens}."
            )
        if self.samples > 1 and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise BoltError(
                "sampling several answers needs --temperature > 0 and 0 < --top-p <= 1, "
                f"got {self.temperature}, {self.top_p}."
            )
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise BoltError(
                f"--data-dir {self.data_dir}: no such directory. "
                "It should hold one folder per dataset, e.g. DIR/gsm8k/test.jsonl."
            )
