"""``bolt demo``: the paper's three claims, reproduced in miniature on the embedded world.

For every seed, in ``OUT/seed-N/``:

1. ``warm_start``: trained on the warm-start split with oracle latents (random layout).
2. ``raw_warm``: raw text of the same split, same compute (claim 1's baseline).
3. ``em_1 .. em_N``: E-step on the bootstrap split with the previous model and K samples,
   then an M-step from the base initialisation on warm-start + bootstrap latents.
   With ``--estep-folds N`` the E-steps from iteration 2 on are cross-fitted (``bolt.crossfit``):
   ``models/crossfit/em_i-without-fold-f`` infers fold f's latents for iteration i + 1.
4. ``em_1_k{k}``: iteration 1 with K = k in the E-step (inference-compute sweep).
5. ``raw_token_matched`` / ``raw_flops_matched``: raw warm-start + bootstrap text, for as
   many epochs as the last EM model saw of its data / for as many tokens.
   ``wrap`` (``--wrap``): the same raw text mixed 1:1 with the oracle's rephrasings of it
   (WRAP-like: four styles, no reasoning added), FLOPs-matched like ``raw_flops_matched``.
6. Every model evaluated: held-out accuracy (latent models reason in latent space, raw
   ones answer directly), raw NLL per token, IWAE bound per token for latent models,
   and the oracle's verdict on the latents each latent model was trained on.

``results.json`` (``models`` -> name -> per-seed lists), ``results.md`` and three PNG plots
go to ``OUT``. The trainings and E-steps form a graph (``demo_jobs``) that runs on
``workers`` processes side by side (``bolt.jobgraph``). Every stage is resumable;
rerunning the command continues.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bolt.chunking import with_new_prefixes
from bolt.crossfit import in_fold, merge_folds, write_fold_inputs
from bolt.errors import BoltError
from bolt.estep import PROPOSALS, EStepConfig, estep_stage
from bolt.evaluation import EvalConfig, eval_stage
from bolt.jobgraph import Job, run_graph
from bolt.records import read_documents, write_json, write_jsonl
from bolt.rundir import RunDir, config_to_json
from bolt.sampling import SamplingConfig
from bolt.synthesize import SynthesizeConfig, synthesize_stage, with_synthetic
from bolt.training import TrainConfig, train
from bolt.world import ANSWER_PATTERN, OracleTeacher, WorldConfig, latent_is_correct, write_world


@dataclass
class DemoConfig:
    """One demo run; ``quick()`` and ``full()`` give the smaller and larger presets."""

    world: WorldConfig = field(default_factory=lambda: WorldConfig(warm_documents=50, bootstrap_documents=150, heldout_documents=20, questions=200, estep_context=1))
    """Small splits, like the paper's data-starved regime, but no smaller: with 25 warm-start
    documents (600 or 1200 steps) the warm start learned the task on one seed of three
    (held-out accuracy 0.48, 0.13-0.29, 0.27-0.35), with 50 documents on all three (0.61-0.87),
    and EM can only bootstrap from a warm start that works (README). The bootstrap split is
    3 times the warm start's (the paper's is 8 times): with one as big as the warm start's, each
    M-step learned its latents by heart and iteration 2's E-step picked them back (README).
    The E-step sees one sentence of context, the question an answer's work depends on: with
    the paper's 3, the raw sentences before it (training documents always carry latents)
    threw an em_1 model off (82% of questions right when asked bare, 38% in raw context)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(model="world", seq_len=256, batch_size=16, steps=800, lr=1e-3, warmup_steps=50, precision="auto", log_every=50))
    """Settings of every model; ``steps`` is the warm start's (and raw_warm's) budget; M-steps
    follow from ``m_step_steps`` (or ``m_step_budget``), the raw baselines from the M-steps and
    the epochs of the last EM model. At ``lr`` 3e-3 about one training in eight failed to learn
    the task (10-45 points down); 1e-3 rescued the ones retried (README)."""
    iterations: int = 2
    """EM iterations after the warm start."""
    samples: int = 16
    """K in the E-steps of the main EM chain. At K = 4 the candidates were mostly one chain and
    em_1 only equalled the warm start; K = 16 (at ``estep_temperature`` 1.5) chose more correct
    latents and em_1 beat the warm start on every seed (README)."""
    sweep: list[int] = field(default_factory=lambda: [1, 4])
    """K values for iteration 1 in the inference-compute sweep (the chain's K is added)."""
    m_step_budget: str = "data"
    """``data``: an M-step trains for as many epochs of its (warm-start + bootstrap) data as
    the warm start did of its own, like the paper's ~2 epochs per M-step; ``steps``: the
    warm start's number of steps."""
    m_step_steps: int = 1600
    """When above 0, every M-step trains this many steps whatever its data (overrides
    ``m_step_budget``; 0: the budget rule): with a bigger bootstrap split the model then sees
    each document for fewer epochs, nearer the paper's ~2 epochs per M-step, instead of learning
    its latents by heart (1,600 steps: about 76 epochs of the default's 200 documents, against
    about 150 of 100 under the data rule with 50 bootstrap documents; the warm start's 800 steps
    are about 150 epochs of its 50, as many as it needs to learn the task)."""
    proposal: str = "prior"
    """Where the E-steps' K candidates come from: the model's posterior (the paper) or its prior
    (``EStepConfig.proposal``). On this world's small model the prior proposes correct chains
    about twice as often as the posterior (README), so the demo uses it; ``--proposal
    posterior`` runs the paper's E-step."""
    estep_folds: int = 1
    """Cross-fitted E-steps when above 1: from iteration 2 on, the bootstrap documents are dealt
    into this many folds, and each fold's latents are inferred by a model trained (like an
    M-step, from the base initialisation) on the warm start's latents and the previous
    iteration's latents of the other folds, so that no E-step reads back latents its model was
    trained on. 1: the paper's E-step, with the previous M-step's model."""
    estep_temperature: float = 1.5
    """Sampling temperature of the E-steps' candidates. The weights use the log-probabilities of
    the distribution actually sampled from, so any temperature targets the same posterior; above 1
    the K candidates differ more often (at K = 4 and T = 1 they are mostly identical on this world)."""
    continue_from_previous: bool = False
    """Start each M-step from the previous model (warm-started EM) instead of the base
    initialisation (the paper); the FLOPs-matched baseline then gets the whole chain's steps."""
    wrap: bool = False
    """Also train the WRAP-like rephrasing baseline ``wrap`` (one more FLOPs-matched training per seed)."""
    max_latent_tokens: int = 48
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(iwae_samples=[1, 4], max_latent_tokens=48, max_answer_tokens=48, batch_prompts=64, answer_pattern=ANSWER_PATTERN))
    seeds: int = 1
    """Repetitions with seeds first_seed, first_seed + 1, ...; tables report mean ± std."""
    first_seed: int = 0
    workers: int = 2
    """Trainings and E-steps run side by side, each in its own process (1: all in this one)."""
    compile: bool = False
    """Train through ``torch.compile`` (``bolt.training.train``): on a 2-core AVX2 CPU its steps
    ran 1.16x faster, whole trainings within noise; other kernels, so other numbers than the README's uncompiled runs by
    about one training's spread. A finished model is not retrained when only this changes."""

    def validate(self) -> None:
        self.world.validate()
        self.train.validate()
        self.eval.validate()
        if self.iterations < 1:
            raise BoltError("--iterations must be at least 1 for the demo.")
        if self.world.warm_documents < 1 or self.world.bootstrap_documents < 1:
            raise BoltError(
                f"--warm-documents and --bootstrap-documents must be at least 1, got {self.world.warm_documents} and {self.world.bootstrap_documents}."
            )
        if self.m_step_budget not in ("data", "steps"):
            raise BoltError(f"--m-step-budget must be data or steps, got {self.m_step_budget!r}.")
        if self.m_step_steps < 0:
            raise BoltError(f"--m-step-steps must be at least 1 (or 0 for --m-step-budget's rule), got {self.m_step_steps}.")
        if self.proposal not in PROPOSALS:
            raise BoltError(f"--proposal must be one of {', '.join(PROPOSALS)}, got {self.proposal!r}.")
        if self.estep_temperature <= 0:
            raise BoltError(f"--estep-temperature must be above 0, got {self.estep_temperature}.")
        if not self.sweep or min(self.sweep) < 1:
            raise BoltError(f"--sweep takes K values of at least 1, got {self.sweep}.")
        if self.workers < 1:
            raise BoltError(f"--workers must be at least 1, got {self.workers}.")
        if self.estep_folds < 1 or self.estep_folds > self.world.bootstrap_documents:
            raise BoltError(f"--estep-folds must be between 1 and the bootstrap documents ({self.world.bootstrap_documents}), got {self.estep_folds}.")
        if self.estep_folds > 1 and self.continue_from_previous:
            raise BoltError("--estep-folds above 1 needs M-steps that restart from the base initialisation; drop --continue-from-previous or use --estep-folds 1.")
        if self.compile:
            from bolt.training import check_compile_possible

            check_compile_possible()
        if self.samples not in self.sweep:
            self.sweep = sorted(set(self.sweep) | {self.samples})

    @classmethod
    def quick(cls) -> DemoConfig:
        """A smoke run of every stage, about 3 minutes on 2 cores; far too small to learn the task.

        Where the 9 minutes of the earlier quick preset (25 + 25 documents, 100 steps, K = 16)
        went on an AVX2-only 2-core machine: the E-steps at K = 16 (~130 s each, as an untrained
        model writes every candidate to the 48-token limit) and the trainings on the EM chain,
        which run one after another. K = 4 and 60 steps shorten that chain."""
        world = WorldConfig(warm_documents=25, bootstrap_documents=15, heldout_documents=5, questions=50, estep_context=1)
        train = dataclasses.replace(cls().train, steps=60, batch_size=8)
        return cls(world=world, train=train, samples=4, sweep=[1, 4], m_step_steps=0)

    @classmethod
    def full(cls) -> DemoConfig:
        """The default's settings with a third EM iteration, K up to 64 in the sweep, the WRAP-like
        baseline and twice the held-out questions (not measured as a whole)."""
        world = dataclasses.replace(cls().world, questions=400)
        return cls(world=world, iterations=3, sweep=[1, 4, 16, 64], wrap=True)


def _raw_text_tokens(path: Path) -> int:
    """Raw tokens of a chunked file under the byte tokenizer of the world preset (= UTF-8 bytes)."""
    return sum(len(chunk.text.encode("utf-8")) for document in read_documents(path) for chunk in document.chunks)


def _latent_correct_share(path: Path) -> float:
    verdicts = [latent_is_correct(c.prefix, c.text, c.latent or "") for d in read_documents(path) for c in d.chunks]
    judged = [v for v in verdicts if v is not None]
    return sum(judged) / max(1, len(judged))


def _concatenate(paths: list[Path], output: Path, prefix_chunks: int | None = None) -> Path:
    """Rewritten every time: identical bytes keep a finished training's input hash valid.
    With ``prefix_chunks``, every chunk's prefix is rebuilt to that many previous chunks."""
    documents = [d for p in paths for d in read_documents(p)]
    if prefix_chunks is not None:
        documents = [with_new_prefixes(d, prefix_chunks) for d in documents]
    write_jsonl(output, documents)
    return output


def _seed_directory(output: Path, seed: int) -> Path:
    return output / f"seed-{seed}"


def _prepare_seed(config: DemoConfig, seed: int, directory: Path) -> dict[str, Path]:
    """The world's files and the oracle's warm-start latents (seconds)."""
    data = write_world(directory / "data", config.world, seed)
    data["warm_latents"] = directory / "data" / "warm.latents.jsonl"
    teacher = OracleTeacher(error_rate=config.world.teacher_error_rate, seed=seed)
    synthesize_stage(teacher, data["warm_chunks"], data["warm_latents"], SynthesizeConfig(batch_size=256))
    # raw layouts never read prefixes: one-sentence prefixes throughout keep the raw baselines'
    # input (and so their finished trainings) the same whatever --estep-context is
    data["raw_all"] = _concatenate([data["warm_chunks"], data["bootstrap_chunks"]], directory / "data" / "warm+bootstrap.chunks.jsonl", prefix_chunks=1)
    if config.estep_folds > 1:
        for fold, path in enumerate(write_fold_inputs(data["bootstrap_chunks"], config.estep_folds, directory / "data")):
            data[f"bootstrap_fold_{fold}"] = path
    if config.wrap:
        data["wrap"] = directory / "data" / "warm+bootstrap.wrap.jsonl"
        rephrased = []
        for document in read_documents(data["raw_all"]):
            text, style = teacher.rephrase(document.id, document.text)
            rephrased.append(with_synthetic(document, text, "wrap", style, "world-oracle-v1"))
        write_jsonl(data["wrap"], rephrased)
    return data


def _train_and_evaluate(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], name: str, train_path: Path, layout: str, steps: int, latent_file: Path | None = None, init: Path | None = None, raw_ratio: float = 0.0) -> dict:
    train_config = dataclasses.replace(config.train, seed=seed, layout=layout, steps=steps, raw_ratio=raw_ratio)
    if init is not None:
        train_config = dataclasses.replace(train_config, model=str(init))
    model_dir = directory / "models" / name
    summary = train(train_config, train_path, model_dir, compile=config.compile)
    latent = layout not in ("raw", "pure")
    evaluation = eval_stage(model_dir, directory / "eval" / name, config.eval, documents_path=data["heldout_chunks"], questions_path=data["questions"], latent=latent)
    epochs = summary["tokens"] / summary["tokens_per_epoch"]
    entry = {
        "accuracy": evaluation["accuracy"],
        "nll_per_token": evaluation["nll_per_token"],
        "train_tokens": summary["tokens"],
        "raw_tokens_seen": epochs * _raw_text_tokens(train_path),
        "epochs": epochs,
        "train_seconds": summary.get("seconds"),
        # the last step's training loss: a training that failed to learn the task often ends
        # well above its siblings (README: "How much one training varies")
        "final_loss": summary.get("final_loss"),
    }
    if latent:
        n = max(config.eval.iwae_samples)
        entry["iwae_per_token"] = evaluation[f"iwae{n}_nll_per_token"]
        entry["latent_correct_share"] = _latent_correct_share(latent_file)
    return entry


def m_step_steps(config: DemoConfig, bootstrap_documents: int | None = None) -> int:
    """Steps of one M-step: ``m_step_steps`` when set, else the warm start's, or
    (``m_step_budget="data"``, the paper's rule) that many times the ratio of their documents,
    so that an M-step sees its data for as many epochs as the warm start saw its own.
    ``bootstrap_documents`` (default: the whole split) sizes a cross-fitting model that sees
    only some of them, for as many epochs as an M-step."""
    world = config.world
    bootstrap = world.bootstrap_documents if bootstrap_documents is None else bootstrap_documents
    if config.m_step_steps:
        return round(config.m_step_steps * (world.warm_documents + bootstrap) / (world.warm_documents + world.bootstrap_documents))
    if config.m_step_budget == "steps":
        return config.train.steps
    return round(config.train.steps * (world.warm_documents + bootstrap) / world.warm_documents)


def _chain_steps(config: DemoConfig) -> int:
    """Steps of the FLOPs-matched baseline: continued M-steps accumulate the whole chain's
    compute; restarted ones cost one M-step each."""
    if config.continue_from_previous:
        return config.train.steps + config.iterations * m_step_steps(config)
    return m_step_steps(config)


# The jobs of the graph, at module level so that spawned workers can run them. The last
# argument of each is ``done``: the results of the jobs it waits for.


def _job_warm_start(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], done: dict) -> dict:
    return _train_and_evaluate(config, seed, directory, data, "warm_start", data["warm_latents"], "random", config.train.steps, data["warm_latents"])


def _job_raw_warm(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], done: dict) -> dict:
    """Raw text of the warm-start split with the warm start's compute."""
    return _train_and_evaluate(config, seed, directory, data, "raw_warm", data["warm_chunks"], "raw", config.train.steps)


def _job_raw_flops_matched(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], done: dict) -> dict:
    """Raw text of both splits with the EM chain's compute."""
    return _train_and_evaluate(config, seed, directory, data, "raw_flops_matched", data["raw_all"], "raw", _chain_steps(config))


def _job_wrap(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], done: dict) -> dict:
    """Raw text of both splits mixed 1:1 with its rephrasings (WRAP), with the EM chain's compute."""
    return _train_and_evaluate(config, seed, directory, data, "wrap", data["wrap"], "pure", _chain_steps(config), raw_ratio=0.5)


def _job_raw_token_matched(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], last_job: str, flops_job: str, done: dict) -> dict:
    """Raw text of both splits for as many epochs as the last EM model saw of its data."""
    steps = max(1, round(_chain_steps(config) * done[last_job]["epochs"] / done[flops_job]["epochs"]))
    return _train_and_evaluate(config, seed, directory, data, "raw_token_matched", data["raw_all"], "raw", steps)


def estep_seed(seed: int, iteration: int) -> int:
    """The E-step seed of EM iteration ``iteration`` (1, 2, ...): every iteration draws fresh
    random numbers, as ``bolt em`` does, so no iteration replays the previous one's draws. On
    this world it changed little: iteration 2 re-picked iteration 1's latents either way (2-5
    of 300 bootstrap answers differed), since the M-step had learned them by heart (README).
    The K sweep shares iteration 1's seed, so its models differ only in K."""
    return seed + iteration - 1


def _fold_model_name(previous: str, fold: int) -> str:
    return f"crossfit/{previous}-without-fold-{fold}"


def _fold_latents(directory: Path, name: str, fold: int) -> Path:
    """Where the cross-fitted E-step of ``name`` writes fold ``fold``'s latents."""
    return directory / "latents" / "crossfit" / f"{name}.fold-{fold}.jsonl"


def _job_fold_model(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], previous: str, fold: int, estep_job: str, done: dict) -> str:
    """A cross-fitting model: trained like ``previous``'s M-step (from the base initialisation,
    steps by the same ``m_step_budget`` rule) on the warm start's latents and ``previous``'s
    bootstrap latents outside ``fold``; not evaluated."""
    latents = in_fold(read_documents(Path(done[estep_job])), fold, config.estep_folds, inside=False)
    train_path = directory / "latents" / "crossfit" / f"{previous}-without-fold-{fold}.train.jsonl"
    write_jsonl(train_path, read_documents(data["warm_latents"]) + latents)
    train_config = dataclasses.replace(config.train, seed=seed, layout="random", steps=m_step_steps(config, len(latents)))
    model_dir = directory / "models" / _fold_model_name(previous, fold)
    train(train_config, train_path, model_dir, compile=config.compile)
    return str(model_dir)


def _job_estep(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], name: str, model: str, k: int, iteration: int, done: dict) -> str:
    """E-step on the bootstrap split with ``model`` into ``latents/<name>.jsonl``; cross-fitted
    when the demo has folds and ``model`` was trained on bootstrap latents: one E-step per fold,
    each with the model that did not see that fold, merged in file order into
    ``latents/<name>.crossfit.jsonl``."""
    output = directory / "latents" / f"{name}.jsonl"
    estep = EStepConfig(samples=k, seed=estep_seed(seed, iteration), sampling=SamplingConfig(max_new_tokens=config.max_latent_tokens, temperature=config.estep_temperature), batch_prompts=64, proposal=config.proposal)
    if not _cross_fitted(config, model):
        estep_stage(directory / "models" / model, data["bootstrap_chunks"], output, estep)
        return str(output)
    fold_outputs = []
    for fold in range(config.estep_folds):
        fold_outputs.append(_fold_latents(directory, name, fold))
        estep_stage(directory / "models" / _fold_model_name(model, fold), data[f"bootstrap_fold_{fold}"], fold_outputs[-1], estep)
    return str(merge_folds(fold_outputs, data["bootstrap_chunks"], directory / "latents" / f"{name}.crossfit.jsonl"))


def _cross_fitted(config: DemoConfig, model: str) -> bool:
    """Whether the E-step with ``model`` is cross-fitted: the warm start never saw the bootstrap split."""
    return config.estep_folds > 1 and model != "warm_start"


def _job_m_step(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], name: str, estep_job: str, previous: str, done: dict) -> dict:
    latents = Path(done[estep_job])
    train_path = _concatenate([data["warm_latents"], latents], directory / "latents" / f"{name}.train.jsonl")
    init = directory / "models" / previous if config.continue_from_previous else None
    entry = _train_and_evaluate(config, seed, directory, data, name, train_path, "random", m_step_steps(config), latents, init)
    if _cross_fitted(config, previous):  # one failed fold model shows here before it drags the mean down
        entry["latent_correct_share_by_fold"] = [_latent_correct_share(_fold_latents(directory, name, fold)) for fold in range(config.estep_folds)]
    return entry


def demo_jobs(config: DemoConfig, output: Path) -> dict[str, Job]:
    """Every seed's trainings and E-steps as a graph: the EM chain and the K sweep wait for
    the warm start, each M-step for its E-step, the token-matched baseline for the last
    EM model; the other raw baselines wait for nothing."""
    jobs: dict[str, Job] = {}
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        tag = f"seed-{seed}/"
        directory = _seed_directory(output, seed)
        common = (config, seed, directory, _prepare_seed(config, seed, directory))
        jobs[tag + "warm_start"] = Job(_job_warm_start, common)
        jobs[tag + "raw_warm"] = Job(_job_raw_warm, common)
        chain = ["warm_start"] + [f"em_{i}" for i in range(1, config.iterations + 1)]
        # (model, the model whose E-step it trains on, K, iteration): the EM chain, then the K sweep of iteration 1
        m_steps = [(name, previous, config.samples, i) for i, (previous, name) in enumerate(zip(chain, chain[1:]), start=1)]
        m_steps += [(f"em_1_k{k}", "warm_start", k, 1) for k in config.sweep if k != config.samples]
        for name, previous, k, iteration in m_steps:
            estep_after: tuple[str, ...] = (tag + previous,)
            if _cross_fitted(config, previous):  # the fold models train on the previous E-step's latents
                estep_after = tuple(tag + _fold_model_name(previous, fold) for fold in range(config.estep_folds))
                for fold, fold_job in enumerate(estep_after):
                    jobs[fold_job] = Job(_job_fold_model, common + (previous, fold, tag + f"estep/{previous}"), after=(tag + f"estep/{previous}",))
            jobs[tag + f"estep/{name}"] = Job(_job_estep, common + (name, previous, k, iteration), after=estep_after)
            jobs[tag + name] = Job(_job_m_step, common + (name, tag + f"estep/{name}", previous), after=(tag + f"estep/{name}",))
        jobs[tag + "raw_flops_matched"] = Job(_job_raw_flops_matched, common)
        if config.wrap:
            jobs[tag + "wrap"] = Job(_job_wrap, common)
        jobs[tag + "raw_token_matched"] = Job(_job_raw_token_matched, common + (tag + chain[-1], tag + "raw_flops_matched"), after=(tag + chain[-1], tag + "raw_flops_matched"))
    return jobs


def run_demo(config: DemoConfig, output: Path) -> dict:
    config.validate()
    run = RunDir(output)
    run.start("demo", config, seed=config.first_seed)
    started = time.monotonic()
    jobs = demo_jobs(config, output)
    progress = tqdm(total=len(jobs), desc="demo jobs", unit="job", disable=None)

    def report(name: str, result, seconds: float) -> None:
        progress.update(1)
        if isinstance(result, dict):
            progress.write(f"{name}: accuracy {result['accuracy']:.3f} ({seconds / 60:.1f} min)")

    done = run_graph(jobs, workers=config.workers, report=report)
    progress.close()
    models: dict[str, dict[str, list]] = {}
    for name in jobs:  # graph order, so each per-seed list runs first_seed, first_seed + 1, ... (not finishing order)
        result = done[name]
        if isinstance(result, dict):  # a trained model (E-steps return their output path)
            for key, value in result.items():
                models.setdefault(name.split("/", 1)[1], {}).setdefault(key, []).append(value)
    results = {"models": models, "seeds": config.seeds, "seconds": time.monotonic() - started, "config": config_to_json(config)}
    write_json(output / "results.json", results)
    (output / "results.md").write_text(results_table(models), encoding="utf-8")
    _plots(models, config, output)
    run.finish(seconds=results["seconds"], models=sorted(models))
    return results


ORDER = ["raw_warm", "warm_start", "em_1", "em_2", "em_3", "raw_token_matched", "raw_flops_matched", "wrap"]
COLUMNS = [("accuracy", "accuracy"), ("nll_per_token", "NLL/token"), ("iwae_per_token", "IWAE NLL/token"), ("latent_correct_share", "correct latents"), ("raw_tokens_seen", "raw tokens seen")]


def _cell(values: list | None) -> str:
    if not values or any(v is None for v in values):
        return ""
    array = np.asarray(values, dtype=np.float64)
    if array.mean() > 1000:
        return f"{array.mean():,.0f}"
    if len(array) == 1:
        return f"{array[0]:.3f}"
    return f"{array.mean():.3f} ± {array.std(ddof=1):.3f}"


def results_table(models: dict) -> str:
    names = [n for n in ORDER if n in models] + sorted(n for n in models if n not in ORDER)
    lines = ["| model | " + " | ".join(title for _, title in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_cell(models[name].get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _plots(models: dict, config: DemoConfig, output: Path) -> None:
    from bolt import plots

    plots.accuracy_per_iteration(models, output / "accuracy_per_iteration.png")
    plots.accuracy_against_k(models, config.sweep, output / "accuracy_vs_k.png", config.samples)
    plots.data_efficiency(models, output / "data_efficiency.png")
