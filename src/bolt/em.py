"""The BoLT loop (METHOD.md, "M-step and the EM loop").

Run directory layout (every stage resumable; a rerun skips what is complete)::

    data/                      inputs prepared by the loop (the embedded world when none is given)
      bootstrap.chunks.jsonl   the bootstrap corpus chunked with --prefix-chunks context
    iter-0/model/              warm start: trained on teacher latents
    iter-0/eval/               its evaluation
    iter-i/latents.jsonl       E-step with model i-1 on the bootstrap corpus (i >= 1); M-step data
    iter-i/model/, iter-i/eval/
    iter-i/crossfit/           with --estep-folds F > 1 and i >= 2, instead of iter-i/latents.jsonl:
      train-without-fold-f.jsonl   the previous iteration's latents less fold f
      model-without-fold-f/        trained on it like an M-step
      bootstrap.fold-f.chunks.jsonl, latents.fold-f.jsonl   fold f's E-step with that model
      latents.jsonl                the folds merged in corpus order; iteration i's M-step data
    results.json, results.md   one row per iteration

Every M-step restarts from the base model (the paper) unless ``continue_from_previous``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from bolt.chunking import ChunkConfig, chunk_stage
from bolt.crossfit import in_fold, merge_folds, write_fold_inputs
from bolt.errors import BoltError
from bolt.estep import EStepConfig, estep_stage
from bolt.evaluation import EvalConfig, eval_stage
from bolt.records import is_chunked_file, read_documents, write_json, write_jsonl
from bolt.rundir import RunDir, config_to_json
from bolt.sampling import SamplingConfig
from bolt.synthesize import SynthesizeConfig, synthesize_stage
from bolt.training import TrainConfig, train
from bolt.world import WorldConfig


@dataclass
class EMConfig:
    """The whole BoLT experiment."""

    warm_start: str | None = None
    """Teacher latents (bolt.latents/1) for iteration 0. None: the embedded world (``world``)."""
    bootstrap: str | None = None
    """Corpus (raw or chunked) whose latents the model infers itself in iterations 1..N."""
    heldout: str | None = None
    """Held-out documents for NLL and IWAE bounds (optional)."""
    questions: str | None = None
    """Held-out questions (JSONL with prompt, answer) for latent-space accuracy (optional)."""
    iterations: int = 2
    """EM iterations after the warm start."""
    samples: int = 4
    """K, Monte Carlo samples per chunk in each E-step."""
    prefix_chunks: int = 3
    """Context chunks for self-generated latents (the paper: 3)."""
    max_latent_tokens: int = 128
    """Latent budget per E-step sample (the paper: 1024)."""
    continue_from_previous: bool = False
    """Start each M-step from the previous iteration's model instead of the base model."""
    estep_folds: int = 1
    """Cross-fitted E-steps (``bolt.crossfit``) when above 1: from iteration 2 on, each fold of
    the bootstrap documents gets its latents from a model trained like the M-step on the
    previous iteration's latents of the other folds. For many epochs over a small corpus,
    where the previous M-step's model has learned its latents by heart."""
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(model="tiny", seq_len=256, batch_size=8, epochs=2.0, lr=3e-3, warmup_steps=10))
    """M-step settings; ``train.model`` is the base model (preset or HF directory)."""
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(max_latent_tokens=128, max_answer_tokens=64))
    world: WorldConfig = field(default_factory=lambda: WorldConfig(warm_documents=24, bootstrap_documents=24, heldout_documents=4, questions=40))
    """Sizes of the embedded world used when no corpus is given."""

    def validate(self) -> None:
        if self.iterations < 0 or self.samples < 1:
            raise BoltError("--iterations must be >= 0 and -k/--samples >= 1.")
        if (self.warm_start is None) != (self.bootstrap is None):
            raise BoltError("give both --warm-start and --bootstrap, or neither (to run on the embedded world).")
        if self.estep_folds < 1:
            raise BoltError(f"--estep-folds must be at least 1, got {self.estep_folds}.")
        if self.bootstrap is None and self.estep_folds > self.world.bootstrap_documents:
            raise BoltError(f"--estep-folds {self.estep_folds} is more than the embedded world's {self.world.bootstrap_documents} bootstrap documents; use at most that.")
        if self.estep_folds > 1 and self.continue_from_previous:
            raise BoltError("--estep-folds above 1 needs M-steps that restart from the base model; drop --continue-from-previous or use --estep-folds 1.")
        self.train.validate()
        self.eval.validate()


def _prepare_world(config: EMConfig, data: Path) -> EMConfig:
    """World data and oracle latents for the warm start; answers are read as the world states them."""
    from bolt.world import ANSWER_PATTERN, OracleTeacher, write_world

    paths = write_world(data, config.world, config.seed)
    warm_latents = data / "warm.latents.jsonl"
    synthesize_stage(OracleTeacher(error_rate=config.world.teacher_error_rate, seed=config.seed), paths["warm_chunks"], warm_latents, SynthesizeConfig(batch_size=256))
    return dataclasses.replace(
        config,
        warm_start=str(warm_latents),
        bootstrap=str(paths["bootstrap_chunks"]),
        heldout=str(paths["heldout_chunks"]),
        questions=str(paths["questions"]),
        eval=dataclasses.replace(config.eval, answer_pattern=ANSWER_PATTERN),
    )


def _evaluate(config: EMConfig, model: Path, output: Path, latent: bool = True) -> dict:
    if not (config.heldout or config.questions):
        return {}
    return eval_stage(
        model,
        output,
        config.eval,
        documents_path=Path(config.heldout) if config.heldout else None,
        questions_path=Path(config.questions) if config.questions else None,
        latent=latent,
    )


def run_em(config: EMConfig, output: Path) -> list[dict]:
    config.validate()
    run = RunDir(output)
    run.start("em", config, seed=config.seed)
    if config.warm_start is None:
        config = _prepare_world(config, output / "data")
    bootstrap = Path(config.bootstrap)
    if not is_chunked_file(bootstrap):
        chunked = output / "data" / "bootstrap.chunks.jsonl"
        chunk_stage(bootstrap, chunked, ChunkConfig(prefix_chunks=config.prefix_chunks, seed=config.seed))
        bootstrap = chunked

    if config.estep_folds > 1 and config.iterations >= 2:
        documents = len(read_documents(bootstrap))
        if config.estep_folds > documents:
            raise BoltError(f"--estep-folds {config.estep_folds} is more than the {documents} documents of {bootstrap}; use at most {documents}.")

    rows = []
    base = dataclasses.replace(config.train, seed=config.seed)
    model = output / "iter-0" / "model"
    summary = train(base, Path(config.warm_start), model)
    rows.append({"iteration": 0, "data": "teacher latents", "train_loss": summary["final_loss"], **_evaluate(config, model, output / "iter-0" / "eval")})
    run.log_metrics(**rows[-1])
    previous_latents: Path | None = None  # the latents the model of the previous iteration trained on
    for iteration in range(1, config.iterations + 1):
        directory = output / f"iter-{iteration}"
        estep = EStepConfig(samples=config.samples, seed=config.seed + iteration, sampling=SamplingConfig(max_new_tokens=config.max_latent_tokens))
        latents = directory / "latents.jsonl"
        if config.estep_folds > 1 and iteration >= 2:
            latents = directory / "crossfit" / "latents.jsonl"
            estep_summary = _cross_fitted_estep(config, base, bootstrap, previous_latents, latents, estep)
        else:
            estep_summary = estep_stage(model, bootstrap, latents, estep)
        previous_latents = latents
        start_from = str(model) if config.continue_from_previous else base.model
        step_config = dataclasses.replace(base, model=start_from, from_scratch=base.from_scratch and not config.continue_from_previous)
        model = directory / "model"
        summary = train(step_config, latents, model)
        rows.append({
            "iteration": iteration,
            "data": f"E-step, K={config.samples}",
            "train_loss": summary["final_loss"],
            "estep_mean_ess": estep_summary["mean_ess"],
            "estep_unfinished_share": estep_summary["unfinished_latent_share"],
            **_evaluate(config, model, directory / "eval"),
        })
        run.log_metrics(**rows[-1])
    write_results(output, rows)
    run.finish(iterations=rows)
    return rows


def _cross_fitted_estep(config: EMConfig, base: TrainConfig, bootstrap: Path, previous_latents: Path, output: Path, estep: EStepConfig) -> dict[str, float]:
    """One E-step per fold, each with a model trained from the base on the other folds'
    previous latents (the M-step's settings), merged into ``output``; returns the folds'
    summaries pooled over chunks."""
    folds = config.estep_folds
    previous = read_documents(previous_latents)
    crossfit = output.parent
    inputs = write_fold_inputs(bootstrap, folds, crossfit)
    outputs, summaries = [], []
    for fold, fold_input in enumerate(inputs):
        train_path = crossfit / f"train-without-fold-{fold}.jsonl"
        write_jsonl(train_path, in_fold(previous, fold, folds, inside=False))
        model = crossfit / f"model-without-fold-{fold}"
        train(base, train_path, model)
        outputs.append(crossfit / f"latents.fold-{fold}.jsonl")
        summaries.append(estep_stage(model, fold_input, outputs[-1], estep))
    merge_folds(outputs, bootstrap, output)
    chunks = sum(s["chunks"] for s in summaries)
    return {key: sum(s["chunks"] * s[key] for s in summaries) / max(1, chunks) for key in ("mean_ess", "unfinished_latent_share")}


_COLUMNS = ("iteration", "data", "train_loss", "accuracy", "nll_per_token", "iwae1_nll_per_token", "iwae4_nll_per_token", "estep_mean_ess")


def write_results(output: Path, rows: list[dict]) -> None:
    write_json(output / "results.json", config_to_json(rows))
    columns = [c for c in _COLUMNS if any(c in row for row in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    (output / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
