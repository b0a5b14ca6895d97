"""``bolt demo``: the paper's three claims, reproduced in miniature on the embedded world.

For every seed, in ``OUT/seed-N/``:

1. ``warm_start``: trained on the warm-start split with oracle latents (random layout).
2. ``raw_warm``: raw text of the same split, same compute (claim 1's baseline).
3. ``em_1 .. em_N``: the EM chain of ``bolt.em.engine`` (the engine ``bolt em`` runs too): E-step on
   the bootstrap split with the previous model and K samples, then an M-step from the base
   initialisation on its latents (the paper's loop by default; ``--demo-loop`` keeps the warm
   start's teacher latents in every M-step, among its other deviations). With ``--estep-folds N``
   the E-steps from iteration 2 on are cross-fitted.
4. ``em_1_k{k}``: iteration 1 with K = k in the E-step (inference-compute sweep).
5. ``raw_token_matched`` / ``raw_flops_matched``: raw warm-start + bootstrap text, for as
   many epochs as the last EM model saw of its data / for as many tokens.
   ``wrap`` (``--wrap``): the same raw text mixed 1:1 with the oracle's rephrasings of it
   (WRAP-like: four styles, no reasoning added), FLOPs-matched like ``raw_flops_matched``.
6. Every model evaluated: held-out accuracy (latent models reason in latent space, raw
   ones answer directly), raw NLL per token, IWAE bound per token for latent models,
   and the oracle's verdict on the latents each latent model was trained on.

``results.json`` (``models`` -> name -> per-seed lists, and ``claims``: each claim's paired
differences over seeds with 95% intervals and its verdict, ``bolt.report.claims``), ``results.md``
and PNG plots (``bolt.report.plots``) go to ``OUT``. The trainings and E-steps form a graph (``demo_jobs``) that runs on
``workers`` processes side by side (``bolt.core.jobgraph``). Every stage is resumable;
rerunning the command continues.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

from tqdm.auto import tqdm

from bolt.apps.world.config import DemoConfig
from bolt.apps.world.world import (
    OracleTeacher,
    latent_is_correct,
    write_world_with_latents,
)
from bolt.core.chunking import with_new_prefixes
from bolt.core.jobgraph import Job, run_graph
from bolt.core.records import read_documents, write_json, write_jsonl
from bolt.core.rundir import RunDir, config_to_json
from bolt.em.engine import Chain
from bolt.evaluate.stage import eval_stage
from bolt.report import claims, plots, tables
from bolt.teachers.synthesize import with_synthetic
from bolt.train.training import train


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
    """The world's files and the oracle's warm-start latents (``write_world_with_latents``) and
    the baselines' raw and rephrased text."""
    data = write_world_with_latents(directory / "data", config.world, seed)
    # raw layouts never read prefixes: one-sentence prefixes throughout keep the raw baselines'
    # input (and so their finished trainings) the same whatever --estep-context is
    data["raw_all"] = _concatenate(
        [data["warm_chunks"], data["bootstrap_chunks"]],
        directory / "data" / "warm+bootstrap.chunks.jsonl",
        prefix_chunks=1,
    )
    teacher = OracleTeacher(error_rate=config.world.teacher_error_rate, seed=seed)
    if config.wrap:
        data["wrap"] = directory / "data" / "warm+bootstrap.wrap.jsonl"
        rephrased = []
        for document in read_documents(data["raw_all"]):
            text, style = teacher.rephrase(document.id, document.text)
            rephrased.append(with_synthetic(document, text, "wrap", style, "world-oracle-v1"))
        write_jsonl(data["wrap"], rephrased)
    if config.wrap_cot:
        data["wrap_cot"] = directory / "data" / "warm+bootstrap.wrap-cot.jsonl"
        documents = read_documents(data["raw_all"])
        write_jsonl(
            data["wrap_cot"],
            [
                with_synthetic(
                    d, teacher.rephrase_with_reasoning(d.id, d.text), "wrap-cot", "default", "world-oracle-v1"
                )
                for d in documents
            ],
        )
    return data


def _entry(
    config: DemoConfig,
    directory: Path,
    data: dict[str, Path],
    name: str,
    model_dir: Path,
    train_path: Path,
    summary: dict,
    latent_file: Path | None,
) -> dict:
    """A trained model's row: held-out accuracy and NLL, training tokens and epochs; for a latent
    model (``latent_file`` given) the IWAE bound and the oracle's verdict on the latents it trained on."""
    latent = latent_file is not None
    evaluation = eval_stage(
        model_dir,
        directory / "eval" / name,
        config.eval,
        documents_path=data["heldout_chunks"],
        questions_path=data["questions"],
        latent=latent,
    )
    epochs = summary["tokens"] / summary["tokens_per_epoch"]
    entry = {
        "accuracy": evaluation["accuracy"],
        "nll_per_token": evaluation["nll_per_token"],
        "train_tokens": summary["tokens"],
        "raw_tokens_seen": epochs * _raw_text_tokens(train_path),
        "epochs": epochs,
        "train_seconds": summary.get("seconds"),
        # the last step's training loss: a training that failed to learn the task often ends
        # well above its siblings (docs/EXPERIMENTS.md: "How much one training varies")
        "final_loss": summary.get("final_loss"),
    }
    if latent:
        # the bound on log p(X) per raw token with n samples, comparable with the raw models' NLL
        # on the same documents
        for n in config.eval.iwae_samples:
            entry[f"iwae{n}_per_token"] = evaluation[f"iwae{n}_nll_per_token"]
        entry["iwae_per_token"] = entry[f"iwae{max(config.eval.iwae_samples)}_per_token"]
        entry["latent_correct_share"] = _latent_correct_share(latent_file)
    return entry


def _finish_em_model(
    config: DemoConfig,
    data: dict[str, Path],
    chain: Chain,
    name: str,
    model_dir: Path,
    train_path: Path,
    latents: Path,
    summary: dict,
    estep: dict | None,
) -> dict:
    """The engine's ``Finish`` for the demo: every model of the EM chain evaluated like the baselines."""
    entry = _entry(config, chain.directory, data, name, model_dir, train_path, summary, latents)
    if estep and "fold_latents" in estep:  # one failed fold model shows here before it drags the mean down
        entry["latent_correct_share_by_fold"] = [_latent_correct_share(Path(p)) for p in estep["fold_latents"]]
    return entry


def _train_baseline(
    config: DemoConfig,
    seed: int,
    directory: Path,
    data: dict[str, Path],
    name: str,
    train_path: Path,
    layout: str,
    steps: int,
    raw_ratio: float = 0.0,
) -> dict:
    train_config = dataclasses.replace(config.train, seed=seed, layout=layout, steps=steps, raw_ratio=raw_ratio)
    model_dir = directory / "models" / name
    summary = train(train_config, train_path, model_dir, compile=config.compile)
    return _entry(
        config, directory, data, name, model_dir, train_path, summary, train_path if layout == "random" else None
    )


def m_step_steps(config: DemoConfig) -> int:
    """Steps of one M-step: ``m_step_steps`` when set, else the warm start's (``m_step_budget="steps"``),
    or (``"data"``, the paper's rule) the warm start's times the ratio of their documents, so that
    an M-step sees its data for as many epochs as the warm start saw its own."""
    world = config.world
    if config.m_step_steps:
        return config.m_step_steps
    if config.m_step_budget == "steps":
        return config.train.steps
    documents = world.bootstrap_documents + (
        world.warm_documents if config.loop.m_step_data == "teacher+bootstrap" else 0
    )
    return round(config.train.steps * documents / world.warm_documents)


def _chain_steps(config: DemoConfig) -> int:
    """Steps of the FLOPs-matched baselines: continued M-steps accumulate the whole chain's
    compute; restarted ones cost one M-step each."""
    if config.loop.continue_from_previous:
        return config.train.steps + config.loop.iterations * m_step_steps(config)
    return m_step_steps(config)


def demo_chain(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path]) -> Chain:
    """One seed's EM chain on the world's splits (``bolt.em.engine``), evaluated by the demo."""
    warm = dataclasses.replace(config.train, seed=seed, layout="random")
    return Chain(
        loop=config.loop,
        warm_train=warm,
        m_step_train=dataclasses.replace(warm, steps=m_step_steps(config)),
        warm_latents=data["warm_latents"],
        bootstrap=data["bootstrap_chunks"],
        directory=directory,
        compile=config.compile,
        finish=functools.partial(_finish_em_model, config, data),
    )


# The baselines' jobs, at module level so that spawned workers can run them. The last
# argument of each is ``done``: the results of the jobs it waits for.


def _job_raw_warm(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], done: dict) -> dict:
    """Raw text of the warm-start split with the warm start's compute."""
    return _train_baseline(config, seed, directory, data, "raw_warm", data["warm_chunks"], "raw", config.train.steps)


def _job_warm_long(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], done: dict) -> dict:
    """The warm start's data and layout with the EM chain's training compute (warm start and every M-step)."""
    steps = config.train.steps + config.loop.iterations * m_step_steps(config)
    return _train_baseline(config, seed, directory, data, "warm_long", data["warm_latents"], "random", steps)


def _job_raw_flops_matched(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], done: dict) -> dict:
    """Raw text of both splits with the EM chain's compute."""
    return _train_baseline(
        config, seed, directory, data, "raw_flops_matched", data["raw_all"], "raw", _chain_steps(config)
    )


def _job_wrap(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], done: dict) -> dict:
    """Raw text of both splits mixed 1:1 with its rephrasings (WRAP), with the EM chain's compute."""
    return _train_baseline(
        config, seed, directory, data, "wrap", data["wrap"], "pure", _chain_steps(config), raw_ratio=0.5
    )


def _job_wrap_cot(config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], done: dict) -> dict:
    """Both splits with the oracle's derivations written inline (WRAP-CoT), as plain text only,
    with the EM chain's compute: the baseline that reasons without latent markers."""
    return _train_baseline(config, seed, directory, data, "wrap_cot", data["wrap_cot"], "pure", _chain_steps(config))


def _job_raw_token_matched(
    config: DemoConfig, seed: int, directory: Path, data: dict[str, Path], last_job: str, flops_job: str, done: dict
) -> dict:
    """Raw text of both splits for as many epochs as the last EM model saw of its data."""
    steps = max(1, round(_chain_steps(config) * done[last_job]["epochs"] / done[flops_job]["epochs"]))
    return _train_baseline(config, seed, directory, data, "raw_token_matched", data["raw_all"], "raw", steps)


def demo_jobs(config: DemoConfig, output: Path) -> dict[str, Job]:
    """Every seed's EM chain (``bolt.em.engine.Chain.jobs``, with the K sweep) and its baselines as one
    graph: the token-matched baseline waits for the last EM model, the others for nothing."""
    jobs: dict[str, Job] = {}
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        tag = f"seed-{seed}/"
        directory = _seed_directory(output, seed)
        data = _prepare_seed(config, seed, directory)
        common = (config, seed, directory, data)
        jobs.update(demo_chain(config, seed, directory, data).jobs(tag, config.ks))
        jobs[tag + "raw_warm"] = Job(_job_raw_warm, common)
        if config.warm_long:
            jobs[tag + "warm_long"] = Job(_job_warm_long, common)
        jobs[tag + "raw_flops_matched"] = Job(_job_raw_flops_matched, common)
        if config.wrap:
            jobs[tag + "wrap"] = Job(_job_wrap, common)
        if config.wrap_cot:
            jobs[tag + "wrap_cot"] = Job(_job_wrap_cot, common)
        last = tag + f"em_{config.loop.iterations}"
        jobs[tag + "raw_token_matched"] = Job(
            _job_raw_token_matched, common + (last, tag + "raw_flops_matched"), after=(last, tag + "raw_flops_matched")
        )
    return jobs


def _is_model(name: str) -> bool:
    """A job that trained an evaluated model (not an E-step or a cross-fitting model)."""
    return not name.split("/", 1)[1].startswith(("estep/", "crossfit/"))


def run_demo(config: DemoConfig, output: Path) -> dict:
    config.validate()
    run = RunDir(output)
    run.start("demo", config, seed=config.first_seed)
    started = time.monotonic()
    jobs = demo_jobs(config, output)
    progress = tqdm(total=len(jobs), desc="demo jobs", unit="job", disable=None)

    def report(name: str, result, seconds: float) -> None:
        progress.update(1)
        if _is_model(name):
            progress.write(f"{name}: accuracy {result['accuracy']:.3f} ({seconds / 60:.1f} min)")

    done = run_graph(jobs, workers=config.workers, report=report)
    progress.close()
    models: dict[str, dict[str, list]] = {}
    for name in jobs:  # graph order, so each per-seed list runs first_seed, first_seed + 1, ... (not finishing order)
        if _is_model(name):
            for key, value in done[name].items():
                models.setdefault(name.split("/", 1)[1], {}).setdefault(key, []).append(value)
    verdicts = claims.demo_claims(models, config.loop.samples, config.ks)
    results = {
        "models": models,
        "claims": verdicts,
        "seeds": config.seeds,
        "seconds": time.monotonic() - started,
        "config": config_to_json(config),
    }
    write_json(output / "results.json", results)
    table = tables.summary_table(models)
    (output / "results.md").write_text(
        tables.markdown(table, COLUMNS) + "\n" + claims.markdown(verdicts), encoding="utf-8"
    )
    plots.write_plots(table, {"samples": config.loop.samples}, output, PLOT_FILES)
    run.finish(
        seconds=results["seconds"],
        models=sorted(models),
        claims={number: claim["verdict"] for number, claim in verdicts.items()},
    )
    return results


COLUMNS = [
    ("accuracy", "accuracy"),
    ("nll_per_token", "NLL/token"),
    ("iwae_per_token", "IWAE NLL/token"),
    ("latent_correct_share", "correct latents"),
    ("raw_tokens_seen", "raw tokens seen"),
]
"""The columns of results.md: (metric, title)."""
PLOT_FILES = {"per_iteration": "accuracy_per_iteration.png", "raw_tokens": "data_efficiency.png"}
"""The demo's names for two of ``bolt.report.plots``' figures."""
