"""The ``bolt`` command: a thin layer from flags to each stage's typed config.

Conventions: input files are positional, ``-o/--output`` names the output file or
directory, ``--model`` an HF model directory (or a preset for ``train``), ``-k`` is K,
``--seed`` everywhere. A ``BoltError`` prints as one line and exits with its ``exit_code``: 2 for a user
error, 1 for an environment fault such as an unreachable server. Everything printed passes through ``bolt.core.scrub``.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

from bolt import __version__
from bolt.cli_fields import add_fields, from_flags
from bolt.core.scrub import scrub
from bolt.em.loop import LoopConfig, demo_loop, paper_loop_for_the_world
from bolt.errors import BoltError
from bolt.train.config import TrainConfig

EPILOG = "File formats: docs/FORMATS.md. Every output gets a run directory with manifest.json and metrics.jsonl."

# Choices of the flags that name one of a stage's fixed set of values, spelled out here so that
# parsing needs no stage imports (tests/test_cli.py checks them against the stages' own lists).
TEACHERS = ("anthropic", "hf", "openai", "oracle", "vllm")


TASK_FIELDS = [
    "tasks",
    "data_dir",
    "limit",
    "samples",
    "temperature",
    "top_p",
    "max_gen_tokens",
    "num_fewshot",
    "batch_size",
    "math_timeout",
]
EXECUTOR_FIELDS = ["kind", "workers", "gpus_per_worker"]
LOOP_FIELDS = [
    "iterations",
    "samples",
    "proposal",
    "temperature",
    "m_step_data",
    "continue_from_previous",
    "estep_folds",
]
SYNTHESIZE_FIELDS = ["method", "prompt_file", "batch_size", "allow_failures"]
API_FIELDS = [
    "batch",
    "concurrency",
    "max_retries",
    "max_bad_replies",
    "backoff_base",
    "timeout",
    "poll_interval",
    "max_spend",
]
API_FLAGS = {"backoff_base": "--backoff", "timeout": "--request-timeout"}
"""Flags of ``ApiConfig`` fields named otherwise."""
API_HELP = {
    "max_spend": "spend at most this much in this run: a request goes out only while what was spent plus the worst "
    "case of the requests in flight and its own (its input and --max-new-tokens of output) stay within it; the rest is "
    "not sent and the run says so (cached answers cost nothing; with --workers N each worker gets USD / N; needs the "
    "model's price, built in or --pricing)",
}
FINETUNE_FIELDS = [
    "task",
    "data_dir",
    "seeds",
    "epochs",
    "lr",
    "batch_size",
    "max_train_examples",
    "samples",
    "temperature",
    "top_p",
    "limit",
    "max_gen_tokens",
]
DEMO_FIELDS = ["sweep", "wrap_cot", "warm_long", "wrap", "m_step_budget", "m_step_steps", "workers", "compile"]
DEMO_WORLD_FIELDS = ["teacher_error_rate", "warm_documents", "bootstrap_documents", "modulus", "estep_context"]
DEMO_TRAIN_FIELDS = ["steps", "lr", "precision"]
DEMO_HELP = {
    "wrap_cot": "train the WRAP-CoT baseline: both splits with the oracle's derivations written inline, as plain "
    "text, for the EM chain's compute (--quick: off)",
    "warm_long": "train the warm start on its own data for the EM chain's whole training compute, the control that "
    "tells bootstrapping from more steps (--quick: off)",
    "wrap": "also train the WRAP-like rephrasing baseline: the raw text mixed 1:1 with the oracle's rephrasings of it "
    "in four styles, no reasoning added (on with --full)",
    "warm_documents": "documents in the warm-start split",
    "bootstrap_documents": "documents in the bootstrap split",
    "steps": "training steps of the warm start and raw_warm; M-steps: --m-step-steps",
    "lr": "peak learning rate of every training, warm start, M-steps and baselines alike",
    "modulus": "the arithmetic's modulus; with a prime such as 11 or 13 fewer wrong derivations happen to end on the "
    "right number, which the E-step's weights cannot tell from right ones (docs/EXPERIMENTS.md)",
    "precision": "mixed precision of every training: auto (bf16 where this machine computes it faster than fp32, "
    "else fp32), no (fp32), bf16, fp16",
    "m_step_budget": "instead of --m-step-steps' fixed count: data, each M-step trains as many epochs of its data as "
    "the warm start did of its own (the paper's rule, but on the world's small splits that is so many epochs that the "
    "model learns the latents by heart); steps, as many steps as the warm start",
    "m_step_steps": "every M-step trains N steps, whatever its data; raw baselines follow (--quick: the data rule; 0: "
    "the --m-step-budget rule): with more --bootstrap-documents each document is then seen for fewer epochs",
    "workers": "trainings and E-steps run side by side in N processes, each with cores/N threads",
    "compile": "train every model through torch.compile (meant for GPUs; docs/SCALING.md has the CPU measurements; "
    "a CPU needs a C++ compiler; other kernels, so results differ from uncompiled runs)",
}
"""``bolt demo``'s words for the config fields it exposes (the demo's own reasons, not the fields' general ones)."""
EM_TRAIN_FIELDS = ["seq_len", "batch_size", "lr", "warmup_steps", "precision"]
EM_EVAL_FIELDS = ["answer_pattern", "max_answer_tokens", "iwae_samples"]
EVAL_FIELDS = [
    "iwae_samples",
    "uniform_units",
    "max_latent_tokens",
    "max_answer_tokens",
    "answer_pattern",
    "batch_prompts",
]
SAMPLING_FIELDS = ["max_new_tokens", "temperature", "top_p", "top_k"]
ESTEP_FIELDS = ["samples", "batch_prompts", "keep_candidates", "proposal", "backend"]
CHUNK_FIELDS = ["mean_units", "max_units", "uniform", "prefix_chunks"]
TRAIN_BUDGET = ["steps", "tokens", "epochs"]
TRAIN_OPTIMISATION = [
    "seq_len",
    "batch_size",
    "grad_accum",
    "lr",
    "warmup_steps",
    "weight_decay",
    "clip",
    "precision",
    "checkpoint_every",
    "log_every",
]
TRAIN_FIELDS = ["from_scratch", "layout", "raw_ratio", *TRAIN_BUDGET, *TRAIN_OPTIMISATION]
"""``bolt train``'s flags that are ``TrainConfig`` fields (--model and --seed are shared with other commands)."""


def _add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _add_revision(parser: argparse.ArgumentParser, flag: str = "--model") -> None:
    parser.add_argument(
        "--revision",
        help=f"branch, tag or commit of {flag} when it is a Hugging Face hub id (default: main); "
        "hub models go to the standard cache (HF_HOME, HF_HUB_CACHE), and HF_HUB_OFFLINE=1 reads only that cache",
    )


def _add_strict(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"turn each quality warning ({what}) into an error: exit 2 instead of writing a doubtful result",
    )


def _add_overwrite(parser: argparse.ArgumentParser, what: str = "the output") -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace {what} when bolt wrote it with another config (without it bolt refuses); only what bolt wrote "
        "is removed. A path bolt did not write (no manifest) is never replaced, and rerunning the same config needs no "
        "flag: it resumes or skips",
    )


def _chunk_parser(sub) -> None:
    p = sub.add_parser(
        "chunk",
        help="split a corpus into chunks of sentences",
        description="Split each document into chunks of 1 + Poisson(mean-1) sentence units, each with the text of the "
        "previous chunks as its prefix. Input: JSONL/JSON/Parquet with a 'text' field (optional 'id'), or a Hugging "
        "Face dataset named hf:ORG/NAME, streamed row by row. Output: bolt.chunks/1 JSONL, written as the documents "
        "stream through.",
        epilog="example: bolt chunk corpus.jsonl -o chunks.jsonl --prefix-chunks 1   |   bolt chunk "
        "hf:HuggingFaceTB/finemath --dataset-config finemath-4plus --limit 10000 -o chunks.jsonl",
    )
    p.add_argument(
        "input", help="corpus file (.jsonl, .json or .parquet), or hf:ORG/NAME for a Hugging Face dataset (streamed)"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output chunks file (.jsonl)")
    from bolt.core.chunking import ChunkConfig

    add_fields(p, ChunkConfig(), CHUNK_FIELDS)
    p.add_argument("--text-field", default="text", help="name of the text field (default: text)")
    p.add_argument(
        "--limit", type=int, metavar="N", help="only the first N documents (of a file, or of a streamed dataset)"
    )
    hub = p.add_argument_group("Hugging Face datasets (input hf:ORG/NAME)")
    hub.add_argument("--dataset-config", help="the dataset's configuration (subset) name, e.g. finemath-4plus")
    hub.add_argument("--split", default="train", help="split to stream (default: train)")
    hub.add_argument(
        "--revision", help="branch, tag or commit of the dataset (default: main); pin it for a reproducible corpus"
    )
    _add_overwrite(p)
    _add_seed(p)


def _run_chunk(args) -> dict:
    from bolt.core.chunking import ChunkConfig, HubSource, chunk_stage
    from bolt.core.records import is_hub_corpus

    config = from_flags(ChunkConfig(seed=args.seed), args, CHUNK_FIELDS)
    hub = HubSource(config=args.dataset_config, split=args.split, revision=args.revision)
    if not is_hub_corpus(args.input) and (args.dataset_config or args.revision or args.split != "train"):
        raise BoltError(
            "--dataset-config, --split and --revision are for a Hugging Face dataset input (hf:ORG/NAME); a file is "
            "read whole."
        )
    return chunk_stage(
        args.input if is_hub_corpus(args.input) else Path(args.input),
        args.output,
        config,
        text_field=args.text_field,
        overwrite=args.overwrite,
        hub=hub,
        limit=args.limit,
    )


def _synthesize_parser(sub) -> None:
    p = sub.add_parser(
        "synthesize",
        help="have a teacher LM write a latent thought for every chunk (or rephrase every document)",
        description="Write a latent for every chunk of a bolt.chunks/1 file (--method latent), or rephrase every whole "
        "document (--method wrap: one of four styles per document; wrap-cot: paraphrase with step-by-step reasoning) "
        "into meta.synthetic. Teachers: 'openai' (OpenAI, or any OpenAI-compatible server such as vLLM or SGLang with "
        "--base-url), 'anthropic', 'vllm' (offline on a local GPU), 'hf' (a Hugging Face model from disk, latents "
        "only), 'oracle' (the embedded world's true latents). API keys come from OPENAI_API_KEY / ANTHROPIC_API_KEY or "
        "--env-file and are never written anywhere. API answers are cached in OUT.run/teacher-cache.sqlite (or "
        "--cache-dir): rerunning the same command, even after a kill, sends only what is unanswered, and picks up "
        "batches already submitted. Use --dry-run first to see the request count, tokens and cost. --workers N (with "
        "--executor ray: on a Ray cluster) splits the input into shards, each with its own teacher; the output is that "
        "of one process.",
        epilog="example: bolt synthesize chunks.jsonl -o latents.jsonl --teacher openai --teacher-model gpt-4o-mini "
        "--batch --dry-run",
    )
    p.add_argument("input", type=Path, help="chunks file (bolt.chunks/1); wrap methods also take a raw corpus")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output file (bolt.latents/1, or documents with meta.synthetic)",
    )
    p.add_argument(
        "--teacher",
        default="hf",
        choices=TEACHERS,
        help="who writes the latents: an API (openai, anthropic), a local model (hf, the default; vllm on a GPU) or "
        "the embedded world's oracle",
    )
    p.add_argument(
        "--teacher-model",
        help="model name (openai, anthropic, vllm); for hf a model directory or a Hugging Face hub id (org/name)",
    )
    _add_revision(p, "--teacher-model (hf)")
    from bolt.teachers.api_teacher import ApiConfig
    from bolt.teachers.synthesize import SynthesizeConfig

    add_fields(p, SynthesizeConfig(), ["method", "prompt_file"])
    p.add_argument(
        "--max-new-tokens", type=int, help="answer length budget (default: 256 for latent, 2048 for wrap methods)"
    )
    p.add_argument(
        "--temperature", type=float, default=0.0, help="0 for greedy decoding (default), else sampling temperature"
    )
    add_fields(p, SynthesizeConfig(), ["batch_size"])
    api = p.add_argument_group("API teachers (openai, anthropic)")
    api.add_argument(
        "--base-url",
        help="API endpoint, e.g. http://localhost:8000/v1 for a vLLM or SGLang server (default: the provider's)",
    )
    add_fields(api, ApiConfig(), ["batch", "concurrency"])
    api.add_argument(
        "--dry-run", action="store_true", help="print the request count, estimated tokens and cost, and send nothing"
    )
    api.add_argument(
        "--pricing",
        type=Path,
        help='JSON price table overriding the built-in one: {"MODEL": {"input": USD/1M, "output": USD/1M}}',
    )
    api.add_argument(
        "--cache-dir", type=Path, help="directory of the answer cache, to share it between runs (default: OUT.run/)"
    )
    api.add_argument(
        "--env-file", type=Path, help="a .env file holding OPENAI_API_KEY or ANTHROPIC_API_KEY (the environment wins)"
    )
    add_fields(
        api,
        ApiConfig(),
        API_FIELDS[2:],
        flags=API_FLAGS,
        helps=API_HELP,
        metavars={"max_spend": "USD", "backoff_base": "SECONDS", "timeout": "SECONDS"},
    )
    add_fields(api, SynthesizeConfig(), ["allow_failures"])
    _add_executor(p, "each worker builds its own teacher; API workers share the answer cache")
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="only the first N documents of the input (a trial run before the whole corpus)",
    )
    _add_strict(p, "empty latents, latents cut at --max-new-tokens, latents that repeat themselves")
    _add_overwrite(p)
    _add_seed(p)


def _synthesize_teacher(args):
    """The teacher's spec: its name and options, which each worker builds a teacher from (no key among them)."""
    from bolt.teachers import TeacherSpec

    if args.temperature < 0:
        raise BoltError(f"--temperature must be >= 0 (0: greedy decoding), got {args.temperature}.")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise BoltError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    max_new = args.max_new_tokens or (256 if args.method == "latent" else 2048)
    if args.teacher == "hf":
        if not args.teacher_model:
            raise BoltError("--teacher hf needs --teacher-model DIR (a Hugging Face model directory).")
        return TeacherSpec(
            "hf",
            {
                "model": args.teacher_model,
                "prompt_file": args.prompt_file,
                "max_new_tokens": max_new,
                "temperature": args.temperature,
                "seed": args.seed,
            },
        )
    if args.teacher in ("openai", "anthropic", "vllm"):
        from bolt.teachers.api_teacher import ApiConfig
        from bolt.teachers.chat import Sampling

        if args.teacher == "anthropic" and args.temperature != 0.0:
            raise BoltError(
                "--teacher anthropic: the Messages API has no temperature setting; leave --temperature at its default."
            )
        sampling = Sampling(
            max_tokens=max_new, temperature=args.temperature, seed=None if args.teacher == "anthropic" else args.seed
        )
        if args.teacher == "vllm":
            return TeacherSpec("vllm", {"model": args.teacher_model, "sampling": sampling, "seed": args.seed})
        config = from_flags(ApiConfig(), args, API_FIELDS)
        if config.max_spend is not None:  # each worker spends its share
            config = dataclasses.replace(config, max_spend=config.max_spend / max(1, args.workers))
        options = {
            "model": args.teacher_model,
            "sampling": sampling,
            "config": config,
            "base_url": args.base_url,
            "env_file": args.env_file,
            "pricing_file": args.pricing,
            "seed": args.seed,
        }
        return TeacherSpec(args.teacher, {**options, "require_key": not args.dry_run})
    return TeacherSpec(args.teacher)


def _run_synthesize(args) -> dict:
    from bolt.teachers.synthesize import SynthesizeConfig, synthesize_estimate, synthesize_stage

    spec = _synthesize_teacher(args)
    config = from_flags(SynthesizeConfig(seed=args.seed), args, SYNTHESIZE_FIELDS)
    if args.dry_run:
        return synthesize_estimate(
            spec.build(), args.input, args.output, config, cache_dir=args.cache_dir, limit=args.limit
        )
    return synthesize_stage(
        spec,
        args.input,
        args.output,
        config,
        cache_dir=args.cache_dir,
        executor=_executor_config(args),
        overwrite=args.overwrite,
        strict=args.strict,
        limit=args.limit,
    )


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a causal LM on thought-augmented text (the M-step)",
        description="Continued pretraining of an HF causal LM (or a preset from scratch) on latent data, with the four "
        "latent marker tokens added. Saves a Hugging Face model directory at --output; rerunning the same command "
        "skips a finished run and resumes an interrupted one from its last checkpoint (written every "
        "--checkpoint-every steps; with the default 0 it starts over). Multi-process: `torchrun --nproc_per_node N -m "
        "bolt train ...` or `accelerate launch -m bolt train ...` (DDP; FSDP and bf16 through accelerate's config or "
        "flags, see configs/accelerate/); one optimiser step sees --batch-size x --grad-accum x processes windows. The "
        "data is tokenised once into a memory-mapped token store (OUTPUT/tokens or --token-cache) that every process "
        "reads.",
        epilog="example: bolt train latents.jsonl --model tiny -o runs/warm --epochs 2",
    )
    p.add_argument(
        "input", type=Path, help="latent data (bolt.latents/1); with --layout raw also chunks or a plain corpus"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output model directory")
    p.add_argument(
        "--model",
        help="HF model directory, Hugging Face hub id (org/name), or a preset: tiny, small, world (default: tiny, a "
        "140k-parameter toy for tests and the embedded world; bolt warns when it trains on anything else)",
    )
    _add_revision(p)
    defaults = TrainConfig()
    add_fields(p, defaults, ["from_scratch", "layout", "raw_ratio"])
    add_fields(p.add_mutually_exclusive_group(), defaults, TRAIN_BUDGET)
    add_fields(p, defaults, TRAIN_OPTIMISATION)
    p.add_argument(
        "--token-cache",
        type=Path,
        metavar="DIR",
        help="keep the tokenised data (a memory-mapped token store) in DIR, shared by runs on the same file and "
        "tokenizer (default: OUTPUT/tokens, removed when training completes); on several machines DIR must be on a "
        "shared filesystem",
    )
    p.add_argument(
        "--tokenize-workers",
        type=int,
        default=1,
        metavar="N",
        help="processes that read and tokenise a chunked/latent file when its token store is built (default: 1)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the training steps through torch.compile: same model, other kernels, compiled at the start of the "
        "run (meant for GPUs; docs/SCALING.md has the CPU measurements; a CPU needs a C++ compiler such as g++)",
    )
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute each layer's activations in the backward pass instead of keeping them: far less memory for "
        "long windows, more compute (one extra forward pass per step), the same steps (bolt warns before the first "
        "step when a training will not fit)",
    )
    _add_report_to(p)
    _add_strict(p, "a warm-up as long as the run, or a training that will likely not fit in memory")
    _add_overwrite(p, "the output directory")
    _add_seed(p)


def _is_world_data(path: Path) -> bool:
    """Whether ``path`` holds the embedded world's documents (ids world-...), judged by its first record."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = json.loads(handle.readline() or "{}")
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(first, dict) and str(first.get("id", "")).startswith("world-")


def _train_config(args):
    return from_flags(TrainConfig(model=str(args.model), seed=args.seed), args, TRAIN_FIELDS)


def _run_train(args) -> dict:
    from bolt.train.training import train

    if args.tokenize_workers < 1:
        raise BoltError(f"--tokenize-workers must be >= 1, got {args.tokenize_workers}.")
    if args.model is None:
        args.model = "tiny"
        if not _is_world_data(args.input) and os.environ.get("RANK", "0") == "0":
            warnings.warn(
                "no --model given: training the built-in 'tiny' preset (140k parameters, a byte-level toy for tests "
                f"and the embedded world) on {args.input}; pass --model DIR or a hub id such as "
                "HuggingFaceTB/SmolLM2-135M to train a real model.",
                stacklevel=2,
            )
    return train(
        _train_config(args),
        args.input,
        args.output,
        token_cache=args.token_cache,
        tokenize_workers=args.tokenize_workers,
        compile=args.compile,
        overwrite=args.overwrite,
        strict=args.strict,
        report_to=args.report_to,
        gradient_checkpointing=args.gradient_checkpointing,
    )


def _estep_parser(sub) -> None:
    p = sub.add_parser(
        "estep",
        help="sample K latents per chunk and resample one by importance weight (the E-step)",
        description="For every chunk: K candidate latents from the model (its posterior q(Z|X), or with --proposal "
        "prior its prior p(Z|prefix)), joint scores log p(Z,X), log weights log p - log q, and one latent resampled "
        "with probability softmax(log w). Writes bolt.latents/1 with the chosen latent's scores, the ESS and the IWAE "
        "bound; progress and a manifest go to OUTPUT.run/, and rerunning the same command keeps the documents already "
        "finished and goes on from there. log q is under the distribution actually sampled from, so "
        "--temperature/--top-p/--top-k keep the weights correct.",
        epilog="example: bolt estep chunks.jsonl --model runs/warm -k 4 -o latents-iter1.jsonl   |   on Ray: ... "
        "--executor ray --workers 8 --gpus-per-worker 1 --backend vllm",
    )
    p.add_argument("input", type=Path, help="chunks file (bolt.chunks/1), ideally chunked with --prefix-chunks 3")
    p.add_argument("-o", "--output", type=Path, required=True, help="output latents file")
    p.add_argument("--model", required=True, help="model directory trained by `bolt train` (or a Hugging Face hub id)")
    _add_revision(p)
    from bolt.estep.config import EStepConfig, SamplingConfig

    add_fields(p, EStepConfig(), ["samples"], aliases={"samples": ["-k"]})
    add_fields(p, SamplingConfig(), SAMPLING_FIELDS)
    add_fields(p, EStepConfig(), ["batch_prompts", "keep_candidates"])
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="only the first N documents of the input (a trial run before the whole corpus)",
    )
    p.add_argument(
        "--estimate",
        type=int,
        nargs="?",
        const=32,
        metavar="CHUNKS",
        help="time the E-step on CHUNKS chunks (default: 32) spread over the input, with this model, device, dtype, K "
        "and budget, and print the projected wall time (on --workers such workers) and device-hours of the whole "
        "input; writes nothing",
    )
    add_fields(p, EStepConfig(), ["proposal", "backend"])
    _add_device(p)
    p.add_argument(
        "--dtype",
        default="float32",
        help="weights' dtype: float32 (default; exact weights), bfloat16 or float16 (faster on GPUs, coarser "
        "log-probs)",
    )
    _add_executor(p, "each worker loads the model")
    _add_strict(p, "most chosen latents cut at --max-new-tokens (a model that has not learned the latent format)")
    _add_overwrite(p)
    _add_seed(p)


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (default: the first CUDA GPU torch sees, else an Apple GPU, else the CPU), "
        "cpu, cuda, cuda:N or mps",
    )


def _add_executor(parser: argparse.ArgumentParser, what_workers_do: str) -> None:
    from bolt.core.executors import ExecutorConfig

    group = parser.add_argument_group(f"sharding ({what_workers_do})")
    add_fields(group, ExecutorConfig(), EXECUTOR_FIELDS, flags={"kind": "--executor"})


def _executor_config(args):
    from bolt.core.executors import ExecutorConfig

    return from_flags(ExecutorConfig(), args, EXECUTOR_FIELDS)


def _run_estep(args) -> dict:
    from bolt.estep.config import EStepConfig, SamplingConfig
    from bolt.estep.stage import estep_stage

    config = from_flags(
        EStepConfig(seed=args.seed, sampling=from_flags(SamplingConfig(), args, SAMPLING_FIELDS)), args, ESTEP_FIELDS
    )
    from bolt.core.modeling import resolve_dtype

    if args.estimate is not None:
        from bolt.estep.stage import estimate

        result = estimate(
            args.model,
            args.input,
            config,
            dtype=resolve_dtype(args.dtype),
            device=args.device,
            workers=args.workers,
            sample_chunks=args.estimate,
        )
        print(
            f"{result['chunks_timed']} chunks in {result['seconds']:.1f} s: {result['chunks_per_second']:.2f} "
            f"chunks/s, {result['sampled_tokens_per_second']:,.0f} sampled tokens/s "
            f"({result['unfinished_latent_share']:.0%} of chosen latents ran to the budget). The whole input, "
            f"{result['input_chunks']:,} chunks: ~{result['projected_wall_hours']:,.2f} h on {result['workers']} "
            f"worker(s), ~{result['projected_device_hours']:,.2f} device-hours."
        )
        return result
    return estep_stage(
        args.model,
        args.input,
        args.output,
        config,
        dtype=resolve_dtype(args.dtype),
        executor=_executor_config(args),
        device=args.device,
        overwrite=args.overwrite,
        limit=args.limit,
        strict=args.strict,
    )


def _eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="benchmarks through lm-evaluation-harness, held-out NLL, ELBO/IWAE bounds and latent-space answer "
        "accuracy",
        description="With --tasks: bolt's benchmark tasks (GSM8K, MATH, MMLU-STEM and the embedded world, each also as "
        "a *_latent variant that reasons inside SoL PRIOR ... EoL) through lm-evaluation-harness's HF backend (needs "
        "the 'eval' extra); results in OUT/tasks.json. With held-out documents: raw-text NLL per token and per "
        "character and ELBO/IWAE NLL bounds per token (uniform chunking, all previous text as prefix). With "
        "--questions: greedy answers with reasoning in latent space (prompt ends with SoL PRIOR, stop at the next SoL, "
        "answer read after EoL) in OUT/eval.json.",
        epilog="example: bolt eval --model runs/warm --tasks gsm8k_cot,gsm8k_cot_latent --data-dir data/ --limit 100 "
        "-o runs/warm-eval   |   bolt eval heldout.jsonl --model runs/warm --questions questions.jsonl -o "
        "runs/warm-eval",
    )
    p.add_argument(
        "input", type=Path, nargs="?", help="held-out documents: raw corpus (chunked uniformly) or chunks file"
    )
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="output directory (tasks.json; eval.json, answers.jsonl)"
    )
    p.add_argument("--model", required=True, help="model directory, or a Hugging Face hub id (org/name)")
    _add_revision(p)
    from bolt.evaluate.config import TaskRunConfig

    tasks = p.add_argument_group("benchmark tasks (lm-evaluation-harness)")
    add_fields(tasks, TaskRunConfig(), TASK_FIELDS, metavars={"tasks": "TASK,...", "num_fewshot": "N"})
    p.add_argument("--questions", type=Path, help="JSONL of {prompt, answer} for accuracy")
    p.add_argument(
        "--direct",
        action="store_true",
        help="answer without latents and skip the bounds: raw-data baselines, and the base model "
        "before any training (a model without the latent markers: its NLL and direct answers)",
    )
    _add_device(p)
    from bolt.evaluate.config import EvalConfig

    add_fields(p, EvalConfig(), EVAL_FIELDS)
    _add_strict(p, "gold answers --answer-pattern can never match, most answers empty or unreadable")
    _add_overwrite(p, "the evaluation in the output directory")
    _add_seed(p)


def _run_benchmarks(args) -> dict:
    try:
        from bolt.evaluate.tasks.harness import run_tasks
    except ImportError as exc:
        raise BoltError(
            f"--tasks needs lm-evaluation-harness and math-verify ({exc}); install them with: pip install "
            "'bolt-latent[eval]'."
        ) from None
    from bolt.evaluate.config import TaskRunConfig

    config = from_flags(TaskRunConfig(seed=args.seed), args, TASK_FIELDS)
    return run_tasks(args.model, args.output, config)


def _run_eval(args) -> dict:
    from bolt.evaluate.config import EvalConfig
    from bolt.evaluate.stage import eval_stage

    if args.tasks and args.input is None and args.questions is None:
        return {"tasks": _run_benchmarks(args)}
    config = from_flags(EvalConfig(seed=args.seed), args, EVAL_FIELDS)
    # the likelihood stage first: it claims OUTPUT (manifest.json), the tasks then write OUTPUT/tasks and tasks.json
    # inside it
    results = eval_stage(
        args.model,
        args.output,
        config,
        documents_path=args.input,
        questions_path=args.questions,
        latent=not args.direct,
        device=args.device,
        overwrite=args.overwrite,
        strict=args.strict,
    )
    return results | ({"tasks": _run_benchmarks(args)} if args.tasks else {})


def _em_parser(sub) -> None:
    p = sub.add_parser(
        "em",
        help="the BoLT loop: warm start, then E-step / M-step iterations, evaluating every model",
        description="Warm start on teacher latents, then --iterations rounds of E-step on the bootstrap corpus and "
        "M-step from the base model. Without --warm-start/--bootstrap (give both or neither) it runs on the embedded "
        "arithmetic world (no download). The defaults are the paper's loop: K = 4 candidates from the model's "
        "posterior at temperature 1, every M-step from the base model on the bootstrap corpus's inferred latents only, "
        "3 iterations (the same engine as `bolt demo`). Writes OUTPUT/models/warm_start, OUTPUT/latents/em_i.jsonl "
        "(E-step i) and models/em_i, each model's evaluation in eval/<model> when --heldout or --questions is given "
        "(the embedded world brings its own), and results.json / results.md with one row per iteration. Rerunning the "
        "same command resumes.",
        epilog="example: bolt em -o runs/em   |   bolt em --warm-start warm.latents.jsonl --bootstrap corpus.jsonl "
        "--model ./my-hf-model -o runs/bolt",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="run directory")
    p.add_argument("--warm-start", help="teacher latents for iteration 0 (bolt.latents/1)")
    p.add_argument("--bootstrap", help="corpus whose latents the model infers (raw or chunked)")
    p.add_argument("--heldout", help="held-out documents for NLL and bounds")
    p.add_argument("--questions", help="held-out questions (JSONL prompt/answer)")
    from bolt.em.config import EMConfig

    defaults = EMConfig()
    add_fields(
        p,
        defaults.train,
        ["model"],
        helps={"model": "base model: HF directory, Hugging Face hub id (org/name) or preset"},
    )
    _add_revision(p)
    add_fields(p, defaults.train, ["from_scratch"])
    _add_loop_flags(p, LoopConfig())
    _add_report_to(p)
    p.add_argument(
        "--max-latent-tokens",
        type=int,
        default=128,
        help="latent budget per E-step sample, what `bolt estep` calls --max-new-tokens (default: 128)",
    )
    training = p.add_argument_group("training (the warm start and every M-step, as `bolt train`)")
    add_fields(
        training.add_mutually_exclusive_group(),
        defaults.train,
        TRAIN_BUDGET,
        helps={
            "steps": "optimiser steps per training",
            "tokens": "training tokens per training",
            "epochs": "passes over the data per training, as in the paper (when no --steps or --tokens)",
        },
    )
    add_fields(
        training,
        defaults.train,
        EM_TRAIN_FIELDS,
        helps={"lr": "peak learning rate, for the tiny preset (the paper's 1e-4 suits pretrained models)"},
    )
    evaluation = p.add_argument_group("evaluation of every model (as `bolt eval`, with --heldout or --questions)")
    add_fields(
        evaluation,
        defaults.eval,
        EM_EVAL_FIELDS,
        helps={"answer_pattern": "regex; its first match after EoL is the answer (the embedded world: its own)"},
    )
    evaluation.add_argument(
        "--eval-max-latent-tokens",
        type=int,
        metavar="N",
        help="latent budget per sample in the held-out bounds, what `bolt eval` calls --max-latent-tokens (default: "
        "--max-latent-tokens)",
    )
    _add_overwrite(p, "each stage's output in the run directory")
    _add_seed(p)


def _add_report_to(p) -> None:
    p.add_argument(
        "--report-to",
        metavar="TRACKERS",
        help="also log every training's loss, learning rate and throughput to accelerate's experiment trackers, "
        "comma-separated: tensorboard (under each model's tracking/), wandb, mlflow, ... or all (the tracker's package "
        "must be installed)",
    )


def _add_loop_flags(p, defaults: LoopConfig) -> None:
    """The EM loop's flags (``bolt.em.loop.LoopConfig``), shared by ``bolt em`` and ``bolt demo``. A flag
    left out keeps the loop the command starts from (the demo's --demo-loop, say); ``defaults`` fills
    the help."""
    add_fields(
        p,
        defaults,
        LOOP_FIELDS,
        aliases={"samples": ["-k"]},
        flags={"temperature": "--estep-temperature"},
        metavars={"temperature": "T", "estep_folds": "N"},
        preset=True,
    )


def _loop_from_flags(args, loop: LoopConfig) -> LoopConfig:
    """``loop`` with the loop flags that were given."""
    return from_flags(loop, args, LOOP_FIELDS, given_only=True)


def _run_em(args) -> list:
    from bolt.em.config import EMConfig
    from bolt.em.engine import run_em
    from bolt.train.training import REPORT_TO_ENVIRONMENT

    if args.report_to:
        # every training of the loop, in this process and its workers
        os.environ[REPORT_TO_ENVIRONMENT] = args.report_to

    defaults = EMConfig()
    train = from_flags(defaults.train, args, ["model", "from_scratch", *TRAIN_BUDGET, *EM_TRAIN_FIELDS])
    if args.steps is not None or args.tokens is not None:
        train = dataclasses.replace(train, epochs=None)  # the default budget gives way to the one given
    loop = _loop_from_flags(args, LoopConfig(max_latent_tokens=args.max_latent_tokens))
    evaluation = from_flags(
        dataclasses.replace(
            defaults.eval, max_latent_tokens=args.eval_max_latent_tokens or args.max_latent_tokens, seed=args.seed
        ),
        args,
        EM_EVAL_FIELDS,
    )
    config = EMConfig(
        warm_start=args.warm_start,
        bootstrap=args.bootstrap,
        heldout=args.heldout,
        questions=args.questions,
        loop=loop,
        seed=args.seed,
        train=train,
        eval=evaluation,
    )
    from bolt.apps.world.config import EM_WORLD
    from bolt.apps.world.world import em_inputs

    # the world's sizes are part of every run's config (as before the engine stopped importing the world), so
    # that runs started by earlier versions resume; its files are written only when no corpus is given
    config = dataclasses.replace(config, world=EM_WORLD)
    rows = run_em(config, args.output, prepare_inputs=em_inputs if args.warm_start is None else None)
    print((args.output / "results.md").read_text(), end="")
    return rows


def _k_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers such as 1,4,16, got {text!r}"
        ) from None
    return sorted(set(values))  # DemoConfig.validate refuses an empty list or K below 1


def _demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="reproduce the paper's three claims in miniature on the embedded world (on a CPU; README gives the times)",
        description="Generates the embedded arithmetic world, trains a warm-start latent model on oracle latents, "
        "raw-data baselines, BoLT EM iterations (the engine of `bolt em`), a K sweep and the controls warm_long and "
        "wrap_cot, evaluates all of them, and writes results.json (with each claim's paired differences over seeds, "
        "95% intervals and verdict), results.md and plots to the run directory. Default: splits large enough for the "
        "warm start to learn the task (docs/EXPERIMENTS.md says why; README gives the times); --quick: a smoke test of "
        "every stage, too small to show the claims; --full is for a bigger machine. Rerunning resumes.",
        epilog="example: bolt demo -o runs/demo --seeds 3",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="run directory")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test of every stage: 25 + 15 documents, 60-step trainings, K = 4 (README gives the time)",
    )
    size.add_argument("--full", action="store_true", help="a longer version for a bigger machine")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="repeat everything with N seeds (--seed, --seed+1, ...) and report mean ± std (default: 1)",
    )
    _add_loop_flags(p, paper_loop_for_the_world())
    loop = p.add_mutually_exclusive_group()
    loop.add_argument(
        "--demo-loop",
        action="store_true",
        help="instead of the paper's loop, the deviation docs/EXPERIMENTS.md compares with it: K = 16 from the "
        "prior at temperature 1.5, the warm start's teacher latents kept in every M-step, 2 iterations; the loop flags "
        "above still apply on top",
    )
    loop.add_argument(
        "--paper-loop",
        action="store_true",
        help="the paper's loop, the default (the flag is kept so that scripts that pass it still run)",
    )
    from bolt.apps.world.config import DemoConfig

    defaults = DemoConfig()
    add_fields(
        p,
        defaults.world,
        ["teacher_error_rate"],
        helps={"teacher_error_rate": "share of oracle latents with a wrong step"},
        preset=True,
    )
    p.add_argument(
        "--sweep",
        type=_k_list,
        metavar="K,K,...",
        help="K values of iteration 1's E-step compute sweep, comma-separated (default: 1,4,16; --quick: 1,4; --full: "
        "1,4,16,64); the chain's K is always in it",
    )
    p.add_argument(
        "--estep-context",
        type=int,
        metavar="N",
        help="previous sentences a bootstrap chunk carries as the E-step's prefix (default: 1, the question an answer "
        "depends on, as the teacher sees it; the paper uses 3 chunks)",
    )
    add_fields(p, defaults, ["wrap_cot", "warm_long", "wrap"], helps=DEMO_HELP, preset=True)
    world = p.add_argument_group("size (defaults: those of the preset)")
    add_fields(world, defaults.world, ["warm_documents", "bootstrap_documents"], helps=DEMO_HELP, preset=True)
    add_fields(world, defaults.train, ["steps", "lr"], helps=DEMO_HELP, preset=True)
    add_fields(world, defaults.world, ["modulus"], helps=DEMO_HELP, preset=True)
    add_fields(world, defaults.train, ["precision"], helps=DEMO_HELP, preset=True)
    add_fields(
        p,
        defaults,
        ["m_step_budget", "m_step_steps", "workers", "compile"],
        helps=DEMO_HELP,
        preset=True,
        metavars={"m_step_steps": "N"},
    )
    _add_overwrite(p, "each stage's output in the run directory")
    _add_seed(p)


def _run_demo(args) -> dict:
    from bolt.apps.world.config import DemoConfig
    from bolt.apps.world.demo import run_demo

    config = DemoConfig.quick() if args.quick else DemoConfig.full() if args.full else DemoConfig()
    config.seeds, config.first_seed = args.seeds, args.seed
    if args.demo_loop:  # --quick keeps its smaller K
        config.loop = dataclasses.replace(demo_loop(), samples=config.loop.samples) if args.quick else demo_loop()
    config.loop = _loop_from_flags(args, config.loop)
    if args.m_step_budget is not None and args.m_step_steps is None:
        config.m_step_steps = 0  # a budget rule asked for: the preset's fixed count gives way
    # flags left unset keep the preset's value
    config = from_flags(config, args, DEMO_FIELDS, given_only=True)
    config.world = from_flags(config.world, args, DEMO_WORLD_FIELDS, given_only=True)
    config.train = from_flags(config.train, args, DEMO_TRAIN_FIELDS, given_only=True)
    results = run_demo(config, args.output)
    print((args.output / "results.md").read_text(), end="")
    return results


def _finetune_eval_parser(sub) -> None:
    p = sub.add_parser(
        "finetune-eval",
        help="fine-tune on a task's training split, then evaluate with sampled answers over several seeds",
        description="For each seed: supervised fine-tuning on DIR/<dataset>/train.jsonl with the loss only on the "
        "answer (a *_latent task puts the reasoning inside SoL PRIOR ... EoL), then the task zero-shot through "
        "lm-evaluation-harness with several sampled answers per question (temperature 0.6, top-p 0.9). Writes "
        "finetune_eval.json: accuracy, maj@k and pass@k as mean ± standard error over seeds.",
        epilog="example: bolt finetune-eval --model runs/warm --task gsm8k_cot_latent --data-dir data/ --seeds 3 -o "
        "runs/warm-ft",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output directory (finetune_eval.json, seed-N/model, seed-N/eval)",
    )
    p.add_argument("--model", required=True, help="model directory to fine-tune, or a Hugging Face hub id (org/name)")
    _add_revision(p)
    from bolt.evaluate.config import FinetuneConfig

    add_fields(
        p,
        FinetuneConfig(),
        FINETUNE_FIELDS,
        helps={"data_dir": "DIR/<dataset>/{train,test}.jsonl"},
        required=["data_dir"],
    )
    _add_seed(p)


def _run_finetune_eval(args) -> dict:
    from bolt.evaluate.config import FinetuneConfig
    from bolt.evaluate.finetune import finetune_eval

    try:
        importlib.import_module("bolt.evaluate.tasks.harness")  # are lm-eval and math-verify installed?
    except ImportError as exc:
        raise BoltError(
            f"finetune-eval needs lm-evaluation-harness and math-verify ({exc}); install them with: pip install "
            "'bolt-latent[eval]'."
        ) from None
    config = from_flags(FinetuneConfig(first_seed=args.seed), args, FINETUNE_FIELDS)
    return finetune_eval(args.model, args.output, config)


def _report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="collect metrics from runs into Markdown/JSON tables and PNG plots",
        description="Reads results.json of `bolt demo` / `bolt em` and tasks.json / eval.json of `bolt eval` from each "
        "run directory, pools runs of the same model (seeds), and writes report.md and report.json (mean ± std over "
        "seeds) and plots: accuracy and likelihood per EM iteration with the raw-data baselines, accuracy against raw "
        "tokens, training tokens and K, and benchmark accuracy per task.",
        epilog="example: bolt report runs/demo-seed0 runs/demo-seed1 runs/warm-eval -o runs/report",
    )
    p.add_argument("runs", type=Path, nargs="+", help="run directories")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (report.md, report.json, *.png)")


def _run_report(args) -> dict:
    from bolt.report.stage import report

    result = report(args.runs, args.output)
    print((args.output / "report.md").read_text(), end="")
    return result


def _view_parser(sub) -> None:
    p = sub.add_parser(
        "view",
        help="one HTML page (opens from disk) to look at latents, E-step candidates and weights, and EM runs",
        description="Writes OUTPUT/view.html, a self-contained page: one row per chunk with a latent (its prefix, "
        "text, chosen latent, log p, log q, log w, ESS, weight entropy, whether it was cut at the token budget, and "
        "the embedded world's verdict where it knows the chunk); a row opens to the K candidates with their normalised "
        "weights (E-step output written with --keep-candidates) and to the same chunk's latent in the other files "
        "given (per EM iteration for a run directory). Sort and filter by ESS, entropy, log w, length, cut, wrong, or "
        "text; 50 rows per page, so large files stay fast; an ESS histogram and latent lengths on top.",
        epilog="example: bolt view runs/em -o runs/em-view   |   bolt view latents-iter1.jsonl -o runs/iter1-view   "
        "(then open runs/iter1-view/view.html)",
    )
    p.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        help="latents files (bolt.latents/1), or run directories of bolt em / bolt demo (their latents/*.jsonl)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (view.html, manifest.json)")


def _run_view(args) -> dict:
    from bolt.apps.view import view

    return view(args.inputs, args.output)


def _contamination_parser(sub) -> None:
    p = sub.add_parser(
        "contamination",
        help="n-gram overlap of a corpus and its latents with the GSM8K, MATH and MMLU-STEM test sets (before "
        "comparing benchmark numbers)",
        description="Checks training files against benchmark test sets the way the field decontaminates: lower-cased "
        "words of letters and digits, cut into 13-grams (--ngram); a test document is contaminated when one of its "
        "n-grams occurs in a training file's text or, for a latents file, in a latent (a teacher or an E-step can "
        "write a test solution into one). Writes contamination.json and contamination.md: per dataset the contaminated "
        "test documents, per file the documents (and latents) holding a test n-gram, with examples.",
        epilog="example: bolt contamination data/warm.latents.jsonl data/bootstrap.jsonl "
        "runs/seed-0/latents/em_3.jsonl --data-dir data/tasks -o runs/contamination",
    )
    p.add_argument(
        "files", type=Path, nargs="+", help="JSONL corpora ({id, text}) or bolt.chunks/1 / bolt.latents/1 files"
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output directory (contamination.json, contamination.md, manifest.json)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="DIR/<dataset>/test.jsonl, as `bolt eval --data-dir` reads them (default: the Hugging Face hub, which "
        "needs network)",
    )
    p.add_argument(
        "--datasets",
        default="gsm8k,math,mmlu_stem",
        help="comma-separated test sets to check against (default: gsm8k,math,mmlu_stem)",
    )
    p.add_argument(
        "--ngram", type=int, default=13, help="words per n-gram (default: 13, as GPT-3 and lm-eval's decontamination)"
    )


def _run_contamination(args) -> dict:
    from bolt.evaluate.contamination import ContaminationConfig, contamination

    config = ContaminationConfig(
        ngram=args.ngram, datasets=[d.strip() for d in args.datasets.split(",") if d.strip()], data_dir=args.data_dir
    )
    result = contamination(args.files, args.output, config)
    print((args.output / "contamination.md").read_text(), end="")
    return result


COMMANDS = {
    "chunk": (_chunk_parser, _run_chunk),
    "synthesize": (_synthesize_parser, _run_synthesize),
    "train": (_train_parser, _run_train),
    "estep": (_estep_parser, _run_estep),
    "eval": (_eval_parser, _run_eval),
    "em": (_em_parser, _run_em),
    "demo": (_demo_parser, _run_demo),
    "finetune-eval": (_finetune_eval_parser, _run_finetune_eval),
    "report": (_report_parser, _run_report),
    "contamination": (_contamination_parser, _run_contamination),
    "view": (_view_parser, _run_view),
}


BUDGET_NAMES = {"--max-new-tokens": "--max-latent-tokens", "--max-latent-tokens": "--max-new-tokens"}


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):
        """Unknown flags are reported by the subcommand they were given to, with its closest flags."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            import difflib

            command = getattr(parsed, "command", None)
            sub = _subparser(self, command) if command else None
            target = sub or self
            options = [option for action in target._actions for option in action.option_strings]
            hints = []
            for extra in (e.split("=")[0] for e in extras if e.startswith("-")):
                same = BUDGET_NAMES.get(extra)  # the latent budget has another name in another command
                hints += [same] if same in options else difflib.get_close_matches(extra, options, n=1)
            target.error(
                f"unrecognized arguments: {' '.join(extras)}"
                + (f"; did you mean {' or '.join(hints)}?" if hints else "")
            )
        return parsed


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bolt",
        description="Reasoning to learn from latent thoughts: chunk a corpus, synthesize latents with a teacher, train "
        "on thought-augmented text, bootstrap latents with EM, evaluate. Run `bolt COMMAND --help` for each stage.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"bolt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for build, _ in COMMANDS.values():
        build(sub)
    for command in COMMANDS:
        _subparser(parser, command).add_argument(
            "--config",
            type=Path,
            metavar="FILE.yaml",
            help="take this command's options from a YAML file: long flag names (seq-len: 2048) and positionals "
            "(input: data.jsonl) as keys, or a run directory's config.yaml to run it again; flags on the command "
            "line win",
        )
    return parser


def _check_finite(args, subparser: argparse.ArgumentParser) -> None:
    """Every number flag is finite (nan and inf parse as floats, and would fail deep inside a stage)."""
    flags = {a.dest: a.option_strings[-1] for a in subparser._actions if a.option_strings}
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise BoltError(f"{flags.get(name, '--' + name.replace('_', '-'))} must be a finite number, got {value}.")


_FIXES = {
    errno.ENOSPC: (
        "the disk is full: free some space (or name an output path on another disk) and rerun the same command, "
        "which resumes"
    ),
    errno.EDQUOT: (
        "the disk quota is used up: free some space (or name an output path elsewhere) and rerun the same command, "
        "which resumes"
    ),
    errno.EROFS: "the filesystem is read-only: name an output path on a writable one with -o",
    errno.EACCES: "bolt may not write or read there: fix the permissions, or name another path",
    errno.EPERM: "bolt may not write or read there: fix the permissions, or name another path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: name another path",
    errno.EISDIR: "it is a directory where bolt needs a file: name another path",
    errno.EEXIST: "something is already there: name another path",
    errno.ENOENT: "it does not exist: check the path",
    errno.EIO: "the device reported an I/O error: check the disk, then rerun the same command",
}


def _os_fault(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc`` (itself, a cause or context, or a library's error naming an OS error), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        text = str(exc)
        # safetensors and torch word them in their own errors
        for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
            if f"os error {code})" in text or os.strerror(code) in text:
                return OSError(code, os.strerror(code))
        exc = exc.__cause__ or exc.__context__
    return None


def _describe_os_fault(fault: OSError, args) -> str:
    """One line: the path, what the system said, and what to do."""
    path = fault.filename or getattr(args, "output", None) or "the output"
    name = errno.errorcode.get(fault.errno, str(fault.errno))
    fix = _FIXES.get(fault.errno, "check the path and the disk, then rerun the same command")
    return f"{path}: {fault.strerror or os.strerror(fault.errno)} ({name}); {fix}."


def _refuse_api_flags(args) -> None:
    """``synthesize``'s API-only flags with a local teacher: one line, before anything (a model) is loaded."""
    if args.command != "synthesize" or args.teacher in ("openai", "anthropic"):
        return
    given = [
        flag
        for flag, value in (
            ("--batch", args.batch),
            ("--base-url", args.base_url),
            ("--env-file", args.env_file),
            ("--max-spend", args.max_spend),
        )
        if value
    ]
    if given:
        raise BoltError(
            f"{given[0]} is for the API teachers (--teacher openai or anthropic); --teacher {args.teacher} would "
            f"ignore it: drop {given[0]}"
            + (" (--batch-size sets how many chunks a local teacher takes at once)." if given[0] == "--batch" else ".")
        )


def _resolve_models(args) -> None:
    """``--model`` / ``--teacher-model`` (hf) given as a Hugging Face hub id -> its local snapshot directory
    (downloaded unless HF_HUB_OFFLINE); local directories and presets stay as they are."""
    from bolt.core.modeling import PRESETS, model_path

    revision = getattr(args, "revision", None)
    for dest in ("model", "teacher_model"):
        value = getattr(args, dest, None)
        if value is None or (dest == "teacher_model" and args.teacher != "hf"):
            continue
        if dest == "model" and args.command in ("train", "em") and str(value) in PRESETS and not Path(value).exists():
            if revision:
                raise BoltError(f"--revision is for a hub model; --model {value} is a built-in preset.")
            continue
        setattr(args, dest, model_path(value, revision))


def _own_runs(args, started: float) -> list:
    """The run directories this command wrote (OUT.run/ of a file output, OUT/ of a directory): those whose
    manifest this run touched; none on a process other than the main one."""
    from bolt.core.rundir import RunDir, run_dir_for_file

    output = getattr(args, "output", None)
    if output is None or os.environ.get("RANK", "0") != "0":
        return []
    runs = []
    for run in (run_dir_for_file(output), RunDir(output)):
        try:
            if run.manifest_path.is_file() and run.manifest_path.stat().st_mtime >= started - 1:
                runs.append(run)
        except OSError:
            pass
    return runs


def _mark_failed(args, started: float, error: BaseException) -> None:
    """The command's own manifest, when this run left it 'running': 'failed' with the error."""
    for run in _own_runs(args, started):
        try:
            run.fail(error)
        except OSError:
            pass


def _read_config(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """``--config FILE``: the file's options become the command's defaults before parsing."""
    from bolt import config_file

    path = config_file.config_path(argv)
    command = next((arg for arg in argv if arg in COMMANDS), None)
    if path is None or command is None:
        return
    subparser = _subparser(parser, command)
    config_file.apply(subparser, config_file.read(path, command), path)


def _write_config(parser: argparse.ArgumentParser, args, started: float) -> None:
    """``config.yaml`` in the run directory this command wrote."""
    from bolt import config_file

    for run in _own_runs(args, started)[:1]:
        config_file.write(run.path, config_file.resolved(_subparser(parser, args.command), args, args.command))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    try:
        _read_config(parser, list(sys.argv[1:] if argv is None else argv))
    except BoltError as exc:
        print(f"bolt: error: {scrub(exc)}", file=sys.stderr)
        return exc.exit_code
    args = parser.parse_args(argv)
    if argv is None:  # manifests record sys.argv: keep no credentials there (a --base-url http://user:KEY@host, say)
        sys.argv[:] = [scrub(arg) for arg in sys.argv]
    warnings.formatwarning = lambda message, category, *rest: f"bolt: warning: {scrub(message)}\n"
    from bolt.core.rundir import OVERWRITE_ENVIRONMENT

    before = os.environ.get(OVERWRITE_ENVIRONMENT)
    if getattr(args, "overwrite", False):
        # for the stages a command runs inside itself (em, demo) and their worker processes
        os.environ[OVERWRITE_ENVIRONMENT] = "1"
    started = time.time()
    try:
        _check_finite(args, _subparser(parser, args.command))
        _refuse_api_flags(args)
        _resolve_models(args)
        result = COMMANDS[args.command][1](args)
        _write_config(parser, args, started)
    except BoltError as exc:
        _mark_failed(args, started, exc)
        print(f"bolt {args.command}: error: {scrub(exc)}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        _mark_failed(args, started, exc)
        fault = _os_fault(exc)
        if fault is None:
            raise  # a bug: keep its traceback
        print(f"bolt {args.command}: error: {scrub(_describe_os_fault(fault, args))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        _mark_failed(args, started, exc)
        print(f"bolt {args.command}: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130
    finally:
        if before is None:
            os.environ.pop(OVERWRITE_ENVIRONMENT, None)
        else:
            os.environ[OVERWRITE_ENVIRONMENT] = before
    # one summary under torchrun
    if args.command not in ("em", "demo", "report") and os.environ.get("RANK", "0") == "0":
        print(scrub(json.dumps(result, indent=2, default=str)))
    return 0
