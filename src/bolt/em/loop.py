"""What every EM iteration does (``LoopConfig``), in a module light enough for the CLI to import.

The engine that runs the loop is ``bolt.em.engine``; ``bolt em`` and ``bolt demo`` both take a ``LoopConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bolt.core.choices import M_STEP_DATA, PROPOSALS, MStepData, Proposal
from bolt.errors import BoltError


@dataclass
class LoopConfig:
    """What every EM iteration does. The defaults are the paper's."""

    iterations: int = 3
    """EM iterations after the warm start (the paper shows at least 3)."""
    samples: int = 4
    """K, candidates per chunk in the chain's E-steps (the paper's main runs: 4)."""
    proposal: Proposal = "posterior"
    """Where the E-steps' candidates come from: posterior (the paper: the model's q(Z|X)) or prior
    (p(Z|prefix)); the importance weights are exact either way."""
    temperature: float = 1.0
    """Sampling temperature of the E-steps' candidates (the paper: 1; the weights stay exact at any
    temperature, and above 1 the K candidates differ more often)."""
    max_latent_tokens: int = 128
    """Latent budget per candidate (the paper: 1024)."""
    m_step_data: MStepData = "bootstrap"
    """What every M-step trains on: bootstrap (the paper: the bootstrap corpus with the latents the
    previous model inferred) or teacher+bootstrap (the warm start's teacher latents too)."""
    continue_from_previous: bool = False
    """Start each M-step from the previous model, not the base (the paper restarts)."""
    estep_folds: int = 1
    """Cross-fit the E-steps of iteration 2 on: deal the bootstrap documents into
    N folds, each inferred by a model trained like the previous M-step on the other folds, so no model
    re-reads latents it learned by heart (1: the paper's E-step; meant for many epochs over a small
    corpus; each fold adds one training per iteration from 2 on)."""
    batch_prompts: int = 64
    """Prompts per E-step batch (each sampled K times)."""

    def validate(self) -> None:
        if self.iterations < 0 or self.samples < 1:
            raise BoltError(
                "--iterations must be at least 0 and -k/--samples at least 1, "
                f"got {self.iterations} and {self.samples}."
            )
        if self.proposal not in PROPOSALS:
            raise BoltError(f"--proposal must be one of {', '.join(PROPOSALS)}, got {self.proposal!r}.")
        if not self.temperature > 0:
            raise BoltError(f"--estep-temperature must be above 0, got {self.temperature}.")
        if self.m_step_data not in M_STEP_DATA:
            raise BoltError(f"--m-step-data must be one of {', '.join(M_STEP_DATA)}, got {self.m_step_data!r}.")
        if self.estep_folds < 1:
            raise BoltError(f"--estep-folds must be at least 1, got {self.estep_folds}.")
        if self.estep_folds > 1 and self.continue_from_previous:
            raise BoltError(
                "--estep-folds above 1 needs M-steps that restart from the base model; "
                "drop --continue-from-previous or use --estep-folds 1."
            )


def paper_loop_for_the_world() -> LoopConfig:
    """The paper's loop as ``bolt demo`` runs it by default: every setting the paper's, with latents
    cut at 48 tokens (the world's chains are shorter)."""
    return LoopConfig(max_latent_tokens=48)


def demo_loop() -> LoopConfig:
    """The deviation ``bolt demo --demo-loop`` runs: candidates from the prior at temperature 1.5,
    K = 16, the teacher's latents kept in every M-step, 2 iterations, 48-token latents (the world's
    chains are short). The prior, the higher temperature and the larger K give the small model's
    E-step more varied and more often correct candidates; README and docs/EXPERIMENTS.md give why
    each setting was tried and how it did. The demo's default is the paper's loop
    (``paper_loop_for_the_world``)."""
    return LoopConfig(
        iterations=2,
        samples=16,
        proposal="prior",
        temperature=1.5,
        max_latent_tokens=48,
        m_step_data="teacher+bootstrap",
    )
