"""The BoLT EM engine (docs/METHOD.md, "M-step and the EM loop"): one loop for ``bolt em`` and ``bolt demo``.

``Chain`` is one seed's EM chain. ``Chain.jobs`` lays it out as a graph of jobs
(``bolt.core.jobgraph``): the warm start, then for every iteration an E-step with the previous
model and an M-step on its latents, plus the K sweep of iteration 1 when asked. ``bolt em``
runs that graph on the user's corpus (or the embedded world); ``bolt demo`` runs the same
graph for every seed and adds its baselines. The paper's choices are ``LoopConfig``'s
defaults: K = 4 candidates from the model's posterior at temperature 1, every M-step from
the same base model on the bootstrap corpus's inferred latents only.

Layout of a chain's directory (every stage resumable; a rerun skips what is complete)::

    models/warm_start/            iteration 0: trained on the teacher's latents
    latents/em_i.jsonl            E-step of iteration i with the model of iteration i - 1
    latents/em_i.train.jsonl      the M-step's data, with m_step_data "teacher+bootstrap" (teacher latents first)
    models/em_i/                  M-step of iteration i
    latents/em_1_k{K}.jsonl, models/em_1_k{K}/     iteration 1 with K candidates (the sweep)
    with estep_folds F > 1, from iteration 2 on (instead of latents/em_i.jsonl):
    latents/crossfit/em_{i-1}-without-fold-f.train.jsonl   the M-step data of iteration i - 1 less fold f
    models/crossfit/em_{i-1}-without-fold-f/               trained on it like an M-step
    latents/crossfit/em_i.fold-f.jsonl                     fold f's E-step with that model
    latents/em_i.crossfit.jsonl                            the folds merged in corpus order

``bolt em`` adds ``data/`` (inputs it prepared), ``eval/<model>/`` and ``results.json`` /
``results.md`` (one row per iteration).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bolt.core.chunking import ChunkConfig, chunk_stage
from bolt.core.jobgraph import Job, run_graph
from bolt.core.records import is_chunked_file, read_documents, write_json, write_jsonl
from bolt.core.rundir import RunDir, config_to_json
from bolt.em.config import EMConfig
from bolt.em.crossfit import in_fold, merge_folds, write_fold_inputs
from bolt.em.loop import LoopConfig
from bolt.errors import BoltError
from bolt.estep.config import EStepConfig, SamplingConfig
from bolt.estep.stage import estep_stage
from bolt.evaluate.stage import eval_stage
from bolt.report.tables import rows_markdown
from bolt.train.config import TrainConfig
from bolt.train.training import train


def estep_seed(seed: int, iteration: int) -> int:
    """The E-step seed of iteration ``iteration`` (1, 2, ...): every iteration draws fresh random
    numbers; the K sweep shares iteration 1's, so its models differ only in K."""
    return seed + iteration - 1


Finish = Callable[..., dict]
"""``finish(chain, name, model_dir, train_path, latents, summary, estep)`` -> the model's result.
``latents`` is the E-step output the model trained on (the teacher's for the warm start) and
``estep`` that E-step's summary (None for the warm start). A module-level function (or a
``functools.partial`` of one) so that spawned workers can run it."""


def training_summary(
    chain: Chain, name: str, model_dir: Path, train_path: Path, latents: Path, summary: dict, estep: dict | None
) -> dict:
    """The default ``Finish``: the training's summary, the model's path and the E-step's summary."""
    return {**summary, "model": str(model_dir), "latents": str(latents), "estep": estep}


@dataclass
class Chain:
    """One seed's EM chain: data, settings and directory. Picklable: jobs carry it to workers."""

    loop: LoopConfig
    warm_train: TrainConfig
    """The warm start's training; ``model`` is the base that every M-step restarts from."""
    m_step_train: TrainConfig
    """Every M-step's training (its steps or epochs); a cross-fitting model trains as many epochs."""
    warm_latents: Path
    bootstrap: Path
    """The bootstrap corpus, chunked with the E-step's context."""
    directory: Path
    compile: bool = False
    finish: Finish = training_summary

    def model(self, name: str) -> Path:
        return self.directory / "models" / name

    def latents(self, name: str) -> Path:
        return self.directory / "latents" / f"{name}.jsonl"

    def estep_config(self, samples: int, iteration: int) -> EStepConfig:
        sampling = SamplingConfig(max_new_tokens=self.loop.max_latent_tokens, temperature=self.loop.temperature)
        return EStepConfig(
            samples=samples,
            seed=estep_seed(self.warm_train.seed, iteration),
            sampling=sampling,
            batch_prompts=self.loop.batch_prompts,
            proposal=self.loop.proposal,
        )

    def cross_fitted(self, previous: str) -> bool:
        """Whether the E-step with model ``previous`` is cross-fitted: the warm start never saw the bootstrap corpus."""
        return self.loop.estep_folds > 1 and previous != "warm_start"

    def m_step_data(self, name: str, latents: Path) -> Path:
        """The M-step's training file: the E-step's output, with the teacher's latents before it under
        ``teacher+bootstrap``."""
        if self.loop.m_step_data == "bootstrap":
            return latents
        path = self.directory / "latents" / f"{name}.train.jsonl"
        write_jsonl(
            path, read_documents(self.warm_latents) + read_documents(latents)
        )  # same bytes on a rerun: a finished training stays valid
        return path

    def jobs(self, tag: str = "", sweep: list[int] | tuple[int, ...] = ()) -> dict[str, Job]:
        """The chain's graph, names prefixed with ``tag``: ``warm_start``, ``estep/em_i``, ``em_i``,
        ``crossfit/em_i-without-fold-f`` and, for every K of ``sweep`` other than the chain's,
        ``estep/em_1_k{K}`` and ``em_1_k{K}``."""
        jobs = {tag + "warm_start": Job(_job_warm_start, (self,))}
        chain = ["warm_start"] + [f"em_{i}" for i in range(1, self.loop.iterations + 1)]
        m_steps = [
            (name, previous, self.loop.samples, i)
            for i, (previous, name) in enumerate(itertools.pairwise(chain), start=1)
        ]
        if self.loop.iterations:
            m_steps += [(f"em_1_k{k}", "warm_start", k, 1) for k in sorted(set(sweep)) if k != self.loop.samples]
        for name, previous, k, iteration in m_steps:
            estep_after: tuple[str, ...] = (tag + previous,)
            if self.cross_fitted(previous):
                estep_after = tuple(tag + fold_model_name(previous, fold) for fold in range(self.loop.estep_folds))
                for fold, fold_job in enumerate(estep_after):
                    jobs[fold_job] = Job(
                        _job_fold_model,
                        (self, previous, fold, tag + f"estep/{previous}"),
                        after=(tag + f"estep/{previous}",),
                    )
            jobs[tag + f"estep/{name}"] = Job(_job_estep, (self, name, previous, k, iteration), after=estep_after)
            jobs[tag + name] = Job(
                _job_m_step, (self, name, previous, tag + f"estep/{name}"), after=(tag + f"estep/{name}",)
            )
        return jobs


def fold_model_name(previous: str, fold: int) -> str:
    return f"crossfit/{previous}-without-fold-{fold}"


def fold_latents(chain: Chain, name: str, fold: int) -> Path:
    """Where the cross-fitted E-step of ``name`` writes fold ``fold``'s latents."""
    return chain.directory / "latents" / "crossfit" / f"{name}.fold-{fold}.jsonl"


def _train(chain: Chain, config: TrainConfig, data: Path, name: str) -> dict:
    return train(config, data, chain.model(name), compile=chain.compile)


# The jobs, at module level so that spawned workers can run them. The last argument of each
# is ``done``: the results of the jobs it waits for.


def _job_warm_start(chain: Chain, done: dict) -> dict:
    summary = _train(chain, chain.warm_train, chain.warm_latents, "warm_start")
    return chain.finish(
        chain, "warm_start", chain.model("warm_start"), chain.warm_latents, chain.warm_latents, summary, None
    )


def _job_estep(chain: Chain, name: str, previous: str, k: int, iteration: int, done: dict) -> dict:
    """E-step on the bootstrap corpus with ``previous``'s model; cross-fitted when ``previous`` trained
    on bootstrap latents and the loop has folds: one E-step per fold with the model that did not
    see it, merged in corpus order."""
    config = chain.estep_config(k, iteration)
    if not chain.cross_fitted(previous):
        summary = estep_stage(chain.model(previous), chain.bootstrap, chain.latents(name), config)
        return {**summary, "latents": str(chain.latents(name))}
    folds = chain.loop.estep_folds
    inputs = write_fold_inputs(chain.bootstrap, folds, chain.directory / "data")
    outputs, summaries = [], []
    for fold, fold_input in enumerate(inputs):
        outputs.append(fold_latents(chain, name, fold))
        summaries.append(estep_stage(chain.model(fold_model_name(previous, fold)), fold_input, outputs[-1], config))
    merged = merge_folds(outputs, chain.bootstrap, chain.directory / "latents" / f"{name}.crossfit.jsonl")
    chunks = sum(s["chunks"] for s in summaries)
    pooled = {
        key: sum(s["chunks"] * s[key] for s in summaries) / max(1, chunks)
        for key in ("mean_ess", "unfinished_latent_share")
    }
    return {**pooled, "chunks": chunks, "latents": str(merged), "fold_latents": [str(p) for p in outputs]}


def _job_m_step(chain: Chain, name: str, previous: str, estep_job: str, done: dict) -> dict:
    estep = done[estep_job]
    latents = Path(estep["latents"])
    data = chain.m_step_data(name, latents)
    config = chain.m_step_train
    if chain.loop.continue_from_previous:
        config = dataclasses.replace(config, model=str(chain.model(previous)), from_scratch=False)
    summary = _train(chain, config, data, name)
    return chain.finish(chain, name, chain.model(name), data, latents, summary, estep)


def _job_fold_model(chain: Chain, previous: str, fold: int, estep_job: str, done: dict) -> dict:
    """A cross-fitting model: trained like ``previous``'s M-step (from the base, as many epochs)
    on that M-step's data less the bootstrap documents of ``fold``; ``estep_job`` is the E-step
    whose latents ``previous`` trained on."""
    bootstrap = read_documents(Path(done[estep_job]["latents"]))
    teacher = read_documents(chain.warm_latents) if chain.loop.m_step_data == "teacher+bootstrap" else []
    kept = teacher + in_fold(bootstrap, fold, chain.loop.estep_folds, inside=False)
    path = chain.directory / "latents" / f"{fold_model_name(previous, fold)}.train.jsonl"
    write_jsonl(path, kept)
    config = chain.m_step_train
    if config.steps:
        config = dataclasses.replace(
            config, steps=max(1, round(config.steps * len(kept) / (len(teacher) + len(bootstrap))))
        )
    _train(chain, config, path, fold_model_name(previous, fold))
    return {"model": str(chain.model(fold_model_name(previous, fold)))}


def _em_row(
    config: EMConfig,
    chain: Chain,
    name: str,
    model_dir: Path,
    train_path: Path,
    latents: Path,
    summary: dict,
    estep: dict | None,
) -> dict:
    """``bolt em``'s ``Finish``: one results row per iteration, with the model's evaluation."""
    row = {
        "iteration": 0 if name == "warm_start" else int(name.split("_")[1]),
        "model": name,
        "train_loss": summary["final_loss"],
    }
    row["data"] = "teacher latents" if estep is None else f"E-step, K={chain.loop.samples}"
    if estep is not None:
        row.update(estep_mean_ess=estep["mean_ess"], estep_unfinished_share=estep["unfinished_latent_share"])
    if config.heldout or config.questions:
        row.update(
            eval_stage(
                model_dir,
                chain.directory / "eval" / name,
                config.eval,
                documents_path=Path(config.heldout) if config.heldout else None,
                questions_path=Path(config.questions) if config.questions else None,
            )
        )
    return row


def em_chain(config: EMConfig, output: Path) -> Chain:
    """The chain ``bolt em`` runs: warm start and M-steps with ``config.train`` and its seed."""
    train_config = dataclasses.replace(config.train, seed=config.seed)
    return Chain(
        loop=config.loop,
        warm_train=train_config,
        m_step_train=train_config,
        warm_latents=Path(config.warm_start),
        bootstrap=Path(config.bootstrap),
        directory=output,
        finish=functools.partial(_em_row, config),
    )


def run_em(
    config: EMConfig, output: Path, prepare_inputs: Callable[[EMConfig, Path], EMConfig] | None = None
) -> list[dict]:
    """``bolt em``: the chain, every model evaluated, ``results.json`` and ``results.md``.

    Without a corpus (``warm_start`` None), ``prepare_inputs(config, OUT/data)`` writes the inputs
    (the embedded world's, for ``bolt em`` run without --warm-start and --bootstrap) and returns the
    config that names them."""
    config.validate()
    run = RunDir(output)
    run.start("em", config, seed=config.seed)
    if config.warm_start is None:
        if prepare_inputs is None:
            raise BoltError("no --warm-start and --bootstrap, and nothing to write the inputs: give both.")
        config = prepare_inputs(config, output / "data")
    bootstrap = Path(config.bootstrap)
    if not is_chunked_file(bootstrap):
        chunked = output / "data" / "bootstrap.chunks.jsonl"
        chunk_stage(bootstrap, chunked, ChunkConfig(prefix_chunks=config.prefix_chunks, seed=config.seed))
        config = dataclasses.replace(config, bootstrap=str(chunked))
    if config.loop.estep_folds > 1 and config.loop.iterations >= 2:
        documents = len(read_documents(Path(config.bootstrap)))
        if config.loop.estep_folds > documents:
            raise BoltError(
                f"--estep-folds {config.loop.estep_folds} is more than the {documents} documents of "
                f"{config.bootstrap}; use at most {documents}."
            )
    chain = em_chain(config, output)

    def report(name: str, result: dict, seconds: float) -> None:
        if "iteration" in result:
            run.log_metrics(**result)

    done = run_graph(chain.jobs(), workers=config.workers, report=report)
    rows = sorted((r for r in done.values() if "iteration" in r), key=lambda row: row["iteration"])
    write_results(output, rows)
    run.finish(iterations=rows)
    return rows


_COLUMNS = (
    "iteration",
    "data",
    "train_loss",
    "accuracy",
    "nll_per_token",
    "iwae1_nll_per_token",
    "iwae4_nll_per_token",
    "estep_mean_ess",
)


def write_results(output: Path, rows: list[dict]) -> None:
    write_json(output / "results.json", config_to_json(rows))
    (output / "results.md").write_text(rows_markdown(rows, _COLUMNS), encoding="utf-8")
