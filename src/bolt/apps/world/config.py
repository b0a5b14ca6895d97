"""The embedded world's and the demo's settings.

Kept apart from the world's generator and the demo's runner so that the CLI reads their defaults and
help without loading torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from bolt.em.loop import LoopConfig, paper_loop_for_the_world
from bolt.errors import BoltError
from bolt.evaluate.config import EvalConfig
from bolt.train.config import TrainConfig

OPERATORS = "+-*"
"""The operations the world knows."""
ANSWER_PATTERN = r"= (\d+)\."
"""How the world states an answer (``So c = 2.``): the pattern that reads it back."""


@dataclass
class WorldConfig:
    """Difficulty and size of the embedded world."""

    steps: int = 4
    """Operations per problem (operands = steps + 1)."""
    modulus: int = 10
    operators: str = "+-*"
    """Operators drawn uniformly per step."""
    problems_per_document: int = 6
    warm_documents: int = 60
    """Warm-start split (raw text + oracle latents)."""
    bootstrap_documents: int = 300
    """Bootstrap split (raw text only; the model infers its latents)."""
    heldout_documents: int = 20
    """Held-out documents for NLL and ELBO/IWAE."""
    questions: int = 200
    """Held-out questions with exact answers."""
    teacher_error_rate: float = 0.0
    """Probability that the oracle botches one step of a derivation."""
    estep_context: int = 3
    """Previous sentences a bootstrap chunk carries as its prefix for the E-step (the paper: 3
    chunks). The teacher sees 1, the question an answer's work depends on."""

    def validate(self) -> None:
        if self.steps < 1 or self.modulus < 2 or not self.operators or set(self.operators) - set(OPERATORS):
            raise BoltError(
                "world: need steps >= 1, modulus >= 2 and operators from '+-*', "
                f"got {self.steps}, {self.modulus}, {self.operators!r}."
            )
        if not 0.0 <= self.teacher_error_rate <= 1.0:
            raise BoltError(f"world: teacher error rate must be in [0, 1], got {self.teacher_error_rate}.")
        if self.estep_context < 1:
            raise BoltError(
                "world: the E-step needs at least the question before an answer (--estep-context 1), "
                f"got {self.estep_context}."
            )


EM_WORLD = WorldConfig(warm_documents=24, bootstrap_documents=24, heldout_documents=4, questions=40)
"""The world's sizes for ``bolt em`` run without a corpus."""


@dataclass
class DemoConfig:
    """One demo run; ``quick()`` and ``full()`` give the smaller and larger presets."""

    world: WorldConfig = field(
        default_factory=lambda: WorldConfig(
            warm_documents=50, bootstrap_documents=150, heldout_documents=20, questions=200, estep_context=1
        )
    )
    """Small splits, like the paper's data-starved regime, but no smaller: with fewer warm-start
    documents the warm start does not learn the task reliably, and EM can only bootstrap from a
    warm start that works. The bootstrap split is 3 times the warm start's (the paper's is 8
    times): with one as small as the warm start's, each M-step learns its latents by heart and
    the next E-step picks them back. The E-step sees one sentence of context, the question an
    answer's work depends on: with the paper's 3, the raw sentences before it throw the model
    off, as training documents always carry latents. docs/EXPERIMENTS.md has the runs behind
    these choices."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            model="world",
            seq_len=256,
            batch_size=16,
            steps=800,
            lr=1e-3,
            warmup_steps=50,
            precision="auto",
            log_every=50,
        )
    )
    """Settings of every model; ``steps`` is the warm start's (and raw_warm's) budget; M-steps
    follow from ``m_step_steps`` (or ``m_step_budget``), the raw baselines from the M-steps and
    the epochs of the last EM model. ``lr`` is 1e-3 because at 3e-3 some trainings fail to learn
    the task (docs/EXPERIMENTS.md)."""
    loop: LoopConfig = field(default_factory=paper_loop_for_the_world)
    """The EM loop (``bolt.em.loop.LoopConfig``): the paper's (K = 4 from the posterior at temperature 1,
    M-steps on the bootstrap latents only, 3 iterations); ``--demo-loop`` runs the deviation of
    ``bolt.em.loop.demo_loop`` instead (docs/EXPERIMENTS.md shows the two side by side)."""
    sweep: list[int] = field(default_factory=lambda: [1, 4, 16])
    """K values for iteration 1 in the inference-compute sweep (the chain's K is added)."""
    m_step_budget: Literal["data", "steps"] = "data"
    """``data``: an M-step trains for as many epochs of its (warm-start + bootstrap) data as
    the warm start did of its own, like the paper's ~2 epochs per M-step; ``steps``: the
    warm start's number of steps."""
    m_step_steps: int = 1600
    """When above 0, every M-step trains this many steps whatever its data (overrides
    ``m_step_budget``; 0: the budget rule): with a bigger bootstrap split the model then sees
    each document for fewer epochs, nearer the paper's ~2 epochs per M-step, instead of learning
    its latents by heart (docs/EXPERIMENTS.md)."""
    wrap: bool = False
    """Also train the WRAP-like rephrasing baseline ``wrap`` (one more FLOPs-matched training per seed)."""
    wrap_cot: bool = True
    """Also train ``wrap_cot`` (WRAP-CoT, the paper's strongest baseline): both splits with the
    oracle's derivations written inline (``bolt.apps.world.world.with_reasoning``), trained as plain text for
    the EM chain's compute; it answers by writing the work out, as latent models do in latent space."""
    warm_long: bool = True
    """Also train ``warm_long``: the warm start on its own data for the EM chain's training
    compute (its steps plus every M-step's), the control that tells bootstrapping from more steps."""
    eval: EvalConfig = field(
        default_factory=lambda: EvalConfig(
            iwae_samples=[1, 4, 16],
            max_latent_tokens=48,
            max_answer_tokens=48,
            batch_prompts=64,
            answer_pattern=ANSWER_PATTERN,
        )
    )
    seeds: int = 1
    """Repetitions with seeds first_seed, first_seed + 1, ...; tables report mean ± std."""
    first_seed: int = 0
    workers: int = 2
    """Trainings and E-steps run side by side, each in its own process (1: all in this one)."""
    compile: bool = False
    """Train through ``torch.compile`` (``bolt.train.training.train``): faster steps, slower to start
    (docs/SCALING.md gives the times); other kernels, so results differ a little from uncompiled
    runs. A finished model is not retrained when only this changes."""

    def validate(self) -> None:
        self.world.validate()
        self.train.validate()
        self.eval.validate()
        self.loop.validate()
        if self.loop.iterations < 1:
            raise BoltError("--iterations must be at least 1 for the demo.")
        if self.world.warm_documents < 1 or self.world.bootstrap_documents < 1:
            raise BoltError(
                "--warm-documents and --bootstrap-documents must be at least 1, "
                f"got {self.world.warm_documents} and {self.world.bootstrap_documents}."
            )
        if self.m_step_budget not in ("data", "steps"):
            raise BoltError(f"--m-step-budget must be data or steps, got {self.m_step_budget!r}.")
        if self.m_step_steps < 0:
            raise BoltError(
                f"--m-step-steps must be at least 1 (or 0 for --m-step-budget's rule), got {self.m_step_steps}."
            )
        if not self.sweep or min(self.sweep) < 1:
            raise BoltError(f"--sweep takes K values of at least 1, got {self.sweep}.")
        if self.workers < 1:
            raise BoltError(f"--workers must be at least 1, got {self.workers}.")
        if self.loop.estep_folds > self.world.bootstrap_documents:
            raise BoltError(
                f"--estep-folds must be between 1 and the bootstrap documents ({self.world.bootstrap_documents}), "
                f"got {self.loop.estep_folds}."
            )
        if self.compile:
            from bolt.train.training import check_compile_possible

            check_compile_possible()

    @property
    def ks(self) -> list[int]:
        """The K values of iteration 1's sweep, the chain's own K included."""
        return sorted(set(self.sweep) | {self.loop.samples})

    @classmethod
    def quick(cls) -> DemoConfig:
        """A smoke run of every stage (README gives the time); far too small to learn the task.

        Most of its time goes to the E-steps (an untrained model writes every candidate to the
        token limit, so the cost grows with K) and to the trainings of the EM chain, which run
        one after another: K = 4 and 60 steps keep both short."""
        world = WorldConfig(
            warm_documents=25, bootstrap_documents=15, heldout_documents=5, questions=50, estep_context=1
        )
        train = dataclasses.replace(cls().train, steps=60, batch_size=8)
        evaluation = dataclasses.replace(cls().eval, iwae_samples=[1, 4])
        return cls(
            world=world,
            train=train,
            loop=dataclasses.replace(cls().loop, samples=4),
            sweep=[1, 4],
            m_step_steps=0,
            wrap_cot=False,
            warm_long=False,
            eval=evaluation,
        )

    @classmethod
    def full(cls) -> DemoConfig:
        """The default's settings with K up to 64 in the sweep, the WRAP-like baseline and twice the
        held-out questions."""
        world = dataclasses.replace(cls().world, questions=400)
        return cls(world=world, sweep=[1, 4, 16, 64], wrap=True)
