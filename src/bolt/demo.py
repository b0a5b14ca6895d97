"""``bolt demo``: the paper's three claims, reproduced in miniature on the embedded world.

For every seed, in ``OUT/seed-N/``:

1. ``warm_start``: trained on the warm-start split with oracle latents (random layout).
2. ``raw_warm``: raw text of the same split, same compute (claim 1's baseline).
3. ``em_1 .. em_N``: E-step on the bootstrap split with the previous model and K samples,
   then an M-step from the base initialisation on warm-start + bootstrap latents.
4. ``em_1_k{k}``: iteration 1 with K = k in the E-step (inference-compute sweep).
5. ``raw_token_matched`` / ``raw_flops_matched``: raw warm-start + bootstrap text, for as
   many epochs as the last EM model saw of its data / for as many tokens.
6. Every model evaluated: held-out accuracy (latent models reason in latent space, raw
   ones answer directly), raw NLL per token, IWAE bound per token for latent models,
   and the oracle's verdict on the latents each latent model was trained on.

``results.json`` (``models`` -> name -> per-seed lists), ``results.md`` and three PNG plots
go to ``OUT``. Every stage is resumable; rerunning the command continues.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bolt.errors import BoltError
from bolt.estep import EStepConfig, estep_stage
from bolt.evaluation import EvalConfig, eval_stage
from bolt.records import read_documents, write_json, write_jsonl
from bolt.rundir import RunDir, config_to_json
from bolt.sampling import SamplingConfig
from bolt.synthesize import SynthesizeConfig, synthesize_stage
from bolt.training import TrainConfig, train
from bolt.world import ANSWER_PATTERN, OracleTeacher, WorldConfig, latent_is_correct, write_world


@dataclass
class DemoConfig:
    """One demo run; ``quick()`` and ``full()`` give the smaller and larger presets."""

    world: WorldConfig = field(default_factory=lambda: WorldConfig(warm_documents=100, bootstrap_documents=300, heldout_documents=20, questions=200))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(model="world", seq_len=256, batch_size=16, steps=1500, lr=3e-3, warmup_steps=50, precision="bf16", log_every=50))
    """Settings of every model; each model gets the same number of steps (same compute),
    except raw_token_matched, whose steps follow from its epochs."""
    iterations: int = 2
    """EM iterations after the warm start."""
    samples: int = 4
    """K in the E-steps of the main EM chain."""
    sweep: list[int] = field(default_factory=lambda: [1, 4])
    """K values for iteration 1 in the inference-compute sweep."""
    continue_from_previous: bool = False
    """Start each M-step from the previous model (warm-started EM) instead of the base
    initialisation (the paper); the FLOPs-matched baseline then gets the whole chain's steps."""
    max_latent_tokens: int = 48
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(iwae_samples=[1, 4], max_latent_tokens=48, max_answer_tokens=48, batch_prompts=64, answer_pattern=ANSWER_PATTERN))
    seeds: int = 1
    """Repetitions with seeds first_seed, first_seed + 1, ...; tables report mean ± std."""
    first_seed: int = 0

    def validate(self) -> None:
        self.world.validate()
        self.train.validate()
        self.eval.validate()
        if self.iterations < 1:
            raise BoltError("--iterations must be at least 1 for the demo.")
        if self.samples not in self.sweep:
            self.sweep = sorted(set(self.sweep) | {self.samples})

    @classmethod
    def quick(cls) -> DemoConfig:
        world = WorldConfig(warm_documents=40, bootstrap_documents=60, heldout_documents=5, questions=100)
        train = dataclasses.replace(cls().train, steps=150, batch_size=8)
        return cls(world=world, train=train)

    @classmethod
    def full(cls) -> DemoConfig:
        world = WorldConfig(warm_documents=100, bootstrap_documents=600, heldout_documents=20, questions=400)
        train = dataclasses.replace(cls().train, steps=3000)
        return cls(world=world, train=train, iterations=3, sweep=[1, 4, 16])


def _raw_text_tokens(path: Path) -> int:
    """Raw tokens of a chunked file under the byte tokenizer of the world preset (= UTF-8 bytes)."""
    return sum(len(chunk.text.encode("utf-8")) for document in read_documents(path) for chunk in document.chunks)


def _latent_correct_share(path: Path) -> float:
    verdicts = [latent_is_correct(c.prefix, c.text, c.latent or "") for d in read_documents(path) for c in d.chunks]
    judged = [v for v in verdicts if v is not None]
    return sum(judged) / max(1, len(judged))


def _concatenate(paths: list[Path], output: Path) -> Path:
    """Rewritten every time: identical bytes keep a finished training's input hash valid."""
    write_jsonl(output, [d for p in paths for d in read_documents(p)])
    return output


class _Seed:
    """Trains and evaluates every model of one seed."""

    def __init__(self, config: DemoConfig, seed: int, directory: Path):
        self.config, self.seed, self.directory = config, seed, directory
        self.results: dict[str, dict] = {}
        self.data = write_world(directory / "data", config.world, seed)
        self.warm_latents = directory / "data" / "warm.latents.jsonl"
        teacher = OracleTeacher(error_rate=config.world.teacher_error_rate, seed=seed)
        synthesize_stage(teacher, self.data["warm_chunks"], self.warm_latents, SynthesizeConfig(batch_size=256))
        self.base = dataclasses.replace(config.train, seed=seed)

    def model(self, name: str, data: Path, layout: str, latent_file: Path | None, steps: int | None = None, init: Path | None = None) -> dict:
        train_config = dataclasses.replace(self.base, layout=layout, steps=steps or self.base.steps)
        if init is not None:
            train_config = dataclasses.replace(train_config, model=str(init))
        model_dir = self.directory / "models" / name
        summary = train(train_config, data, model_dir)
        latent = layout != "raw"
        evaluation = eval_stage(model_dir, self.directory / "eval" / name, self.config.eval, documents_path=self.data["heldout_chunks"], questions_path=self.data["questions"], latent=latent)
        epochs = summary["tokens"] / summary["tokens_per_epoch"]
        entry = {
            "accuracy": evaluation["accuracy"],
            "nll_per_token": evaluation["nll_per_token"],
            "train_tokens": summary["tokens"],
            "raw_tokens_seen": epochs * _raw_text_tokens(data),
            "epochs": epochs,
            "train_seconds": summary.get("seconds"),
        }
        if latent:
            n = max(self.config.eval.iwae_samples)
            entry["iwae_per_token"] = evaluation[f"iwae{n}_nll_per_token"]
            entry["latent_correct_share"] = _latent_correct_share(latent_file)
        self.results[name] = entry
        return entry

    def estep(self, name: str, model: str, k: int) -> Path:
        output = self.directory / "latents" / f"{name}.jsonl"
        config = EStepConfig(samples=k, seed=self.seed, sampling=SamplingConfig(max_new_tokens=self.config.max_latent_tokens), batch_prompts=64)
        estep_stage(self.directory / "models" / model, self.data["bootstrap_chunks"], output, config)
        return output

    def m_step(self, name: str, latents: Path, previous: str) -> dict:
        data = _concatenate([self.warm_latents, latents], self.directory / "latents" / f"{name}.train.jsonl")
        init = self.directory / "models" / previous if self.config.continue_from_previous else None
        return self.model(name, data, "random", latents, init=init)

    def run(self) -> dict[str, dict]:
        config = self.config
        self.model("warm_start", self.warm_latents, "random", self.warm_latents)
        self.model("raw_warm", self.data["warm_chunks"], "raw", None)
        previous = "warm_start"
        for iteration in range(1, config.iterations + 1):
            name = f"em_{iteration}"
            self.m_step(name, self.estep(name, previous, config.samples), previous)
            previous = name
        for k in config.sweep:
            if k != config.samples:
                name = f"em_1_k{k}"
                self.m_step(name, self.estep(name, "warm_start", k), "warm_start")
        raw_all = _concatenate([self.data["warm_chunks"], self.data["bootstrap_chunks"]], self.directory / "data" / "warm+bootstrap.chunks.jsonl")
        last = self.results[previous]
        # Continued M-steps accumulate the compute of the whole chain; restarted ones cost one model each.
        chain_steps = self.base.steps * (config.iterations + 1 if config.continue_from_previous else 1)
        self.model("raw_flops_matched", raw_all, "raw", None, steps=chain_steps)
        flops = self.results["raw_flops_matched"]
        token_matched_steps = max(1, round(chain_steps * last["epochs"] / flops["epochs"]))
        self.model("raw_token_matched", raw_all, "raw", None, steps=token_matched_steps)
        return self.results


def run_demo(config: DemoConfig, output: Path) -> dict:
    config.validate()
    run = RunDir(output)
    run.start("demo", config, seed=config.first_seed)
    started = time.monotonic()
    seeds = range(config.first_seed, config.first_seed + config.seeds)
    per_seed = [_Seed(config, seed, output / f"seed-{seed}").run() for seed in seeds]
    models: dict[str, dict[str, list]] = {}
    for results in per_seed:
        for name, entry in results.items():
            for key, value in entry.items():
                models.setdefault(name, {}).setdefault(key, []).append(value)
    results = {"models": models, "seeds": config.seeds, "seconds": time.monotonic() - started, "config": config_to_json(config)}
    write_json(output / "results.json", results)
    (output / "results.md").write_text(results_table(models), encoding="utf-8")
    _plots(models, config, output)
    run.finish(seconds=results["seconds"], models=sorted(models))
    return results


ORDER = ["raw_warm", "warm_start", "em_1", "em_2", "em_3", "raw_token_matched", "raw_flops_matched"]
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
