"""Stage 3: the E-step. For every chunk, K posterior samples, joint scores, importance
weights and one resampled latent (docs/METHOD.md, "E-step").

For a chunk X with context ``prefix`` (token ids; BOS first when the tokenizer has one):

    posterior prompt  BOS prefix SoL EoL X SoL POST     -> sample Z^(k) up to EoL; log q(Z^(k) | X)
    joint sequence    BOS prefix SoL PRIOR Z^(k) EoL X  -> log p(Z^(k), X | prefix), every token
                                                          after the prefix, SoL included
    log w_k = log p - log q;  one latent resampled with probability softmax(log w)

Sequences longer than the context window lose prefix tokens first (oldest first), then
the end of X, identically for all K samples; the record says how many were cut.
Randomness is per chunk (seeded by seed, document id and chunk index), so results do not
depend on batching, sharding or resumption.

Sampling and scoring go through a ``LatentBackend`` (bolt.estep.backends: HF or vLLM).
Documents are split into shards run by an executor (bolt.core.executors: in this process or
on Ray); each shard appends finished documents to its own partial file, and the output
is those files merged in input order.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bolt.core.executors import ExecutorConfig, run_shards
from bolt.core.layouts import encode
from bolt.core.modeling import check_model_dir, load_tokenizer, model_fingerprint, resolve_device
from bolt.core.progress import progress_bar, run_name
from bolt.core.records import (
    Document,
    DocumentRange,
    DocumentScan,
    PartialDocuments,
    finished_documents,
    merged_documents,
    read_documents,
    require_file,
    shard_partial_paths,
    write_jsonl,
)
from bolt.core.rundir import partial_key, run_dir_for_file, run_stage
from bolt.core.special_tokens import MarkerIds, marker_ids
from bolt.errors import BoltError
from bolt.estep.backends import HFBackend, LatentBackend, make_backend
from bolt.estep.config import EStepConfig
from bolt.estep.importance import effective_sample_size, iwae_bound, log_importance_weights, resample_index


@dataclass
class ChunkContext:
    """A chunk's context and text as token ids, after fitting the context window."""

    prefix: list[int]
    text: list[int]
    prefix_tokens_cut: int = 0
    text_tokens_cut: int = 0


def fit_context(prefix: list[int], text: list[int], window: int, reserved: int) -> ChunkContext:
    """Cut ``prefix`` from the left, then ``text`` from the right, until
    ``len(prefix)+len(text)+reserved <= window``."""
    room = window - reserved
    if room < 1:
        raise BoltError(
            f"the context window ({window} tokens) leaves no room for the chunk after {reserved} reserved tokens "
            "(markers and the latent budget). "
            "Lower the latent budget (--max-new-tokens of `bolt estep`, --max-latent-tokens of `bolt em`) "
            "or use a model with a longer context."
        )
    prefix_cut = max(0, len(prefix) + len(text) - room)
    prefix_cut = min(prefix_cut, len(prefix))
    prefix = prefix[prefix_cut:]
    text_cut = max(0, len(prefix) + len(text) - room)
    return ChunkContext(
        prefix=prefix, text=text[: len(text) - text_cut], prefix_tokens_cut=prefix_cut, text_tokens_cut=text_cut
    )


def chunk_seed(seed: int, document_id: str, chunk_index: int) -> np.random.SeedSequence:
    digest = hashlib.sha256(document_id.encode("utf-8")).digest()
    return np.random.SeedSequence([seed, int.from_bytes(digest[:8], "little"), chunk_index])


def posterior_prompt(context: ChunkContext, m: MarkerIds) -> list[int]:
    start = [m.bos] if m.bos is not None else []
    return start + context.prefix + [m.sol, m.eol] + context.text + [m.sol, m.post]


def prior_prompt(context: ChunkContext, m: MarkerIds) -> list[int]:
    """The joint form up to the latent: the model's prior over Z given the prefix."""
    start = [m.bos] if m.bos is not None else []
    return start + context.prefix + [m.sol, m.prior]


def joint_sequence(context: ChunkContext, latent: list[int], m: MarkerIds) -> tuple[list[int], int]:
    """The joint sequence and the index of its first scored token (the SoL)."""
    start = ([m.bos] if m.bos is not None else []) + context.prefix
    return start + [m.sol, m.prior] + latent + [m.eol] + context.text, len(start)


def latent_body(token_ids: list[int], m: MarkerIds) -> list[int]:
    return token_ids[:-1] if token_ids and token_ids[-1] == m.eol else list(token_ids)


@dataclass
class ChunkJob:
    document_index: int
    chunk_index: int
    context: ChunkContext
    seeds: np.random.SeedSequence


def chunk_jobs(documents: list[Document], tokenizer, config: EStepConfig, window: int) -> Iterator[ChunkJob]:
    # BOS + SoL EoL ... SoL POST, then up to max_new_tokens of latent (EoL included).
    reserved = 5 + config.sampling.max_new_tokens
    for document_index, document in enumerate(documents):
        for chunk_index, chunk in enumerate(document.chunks):
            context = fit_context(encode(tokenizer, chunk.prefix), encode(tokenizer, chunk.text), window, reserved)
            yield ChunkJob(document_index, chunk_index, context, chunk_seed(config.seed, document.id, chunk_index))


def as_backend(model_or_backend, tokenizer, config: EStepConfig) -> LatentBackend:
    """A backend as is; a bare transformers model wrapped in the HF backend."""
    if isinstance(model_or_backend, LatentBackend):
        return model_or_backend
    return HFBackend(model_or_backend, tokenizer.pad_token_id, config.max_batch_tokens)


def run_batch(model, tokenizer, jobs: list[ChunkJob], m: MarkerIds, config: EStepConfig) -> list[dict[str, Any]]:
    """Sample, score, weight and resample for a batch of chunks; one result dict per job.

    ``model`` is a ``LatentBackend`` or a transformers model (run through the HF backend).
    """
    backend = as_backend(model, tokenizer, config)
    k = config.samples
    seeds = [job.seeds.spawn(k + 1) for job in jobs]
    rngs = [np.random.default_rng(child) for children in seeds for child in children[:k]]
    make_prompt = prior_prompt if config.proposal == "prior" else posterior_prompt
    prompts = [make_prompt(job.context, m) for job in jobs]
    samples = backend.sample_latents(prompts, k, {m.eol}, config.sampling, rngs)
    sequences, starts = [], []
    for job, job_samples in zip(jobs, samples):
        for sample in job_samples:
            sequence, start = joint_sequence(job.context, latent_body(sample.token_ids, m), m)
            sequences.append(sequence)
            starts.append(start)
    joint = backend.score_sequences(sequences, starts)
    results = []
    for index, (job, job_samples) in enumerate(zip(jobs, samples)):
        log_p = joint[index * k : (index + 1) * k]
        log_q = [sample.log_prob for sample in job_samples]
        log_w = log_importance_weights(log_p, log_q)
        chosen = resample_index(log_w, np.random.default_rng(seeds[index][k]))
        body = latent_body(job_samples[chosen].token_ids, m)
        text = tokenizer.decode(body)
        result: dict[str, Any] = {
            "latent": text,
            "log_p_joint": log_p[chosen],
            "log_q": log_q[chosen],
            "log_w": float(log_w[chosen]),
            "k": k,
            "ess": effective_sample_size(log_w),
            "iwae": iwae_bound(log_w),
            "latent_finished": job_samples[chosen].finished,
            "sampled_tokens": sum(len(sample.token_ids) for sample in job_samples),
            "latent_retokenizes": encode(tokenizer, text) == body,
            "prefix_tokens_cut": job.context.prefix_tokens_cut,
            "text_tokens_cut": job.context.text_tokens_cut,
        }
        if not result["latent_retokenizes"]:
            result["latent_token_ids"] = body
        if config.keep_candidates:
            result["candidates"] = [
                {
                    "latent": tokenizer.decode(latent_body(s.token_ids, m)),
                    "log_p_joint": p,
                    "log_q": q,
                    "log_w": float(w),
                    "finished": s.finished,
                }
                for s, p, q, w in zip(job_samples, log_p, log_q, log_w)
            ]
        results.append(result)
    return results


def batch_windows(
    documents: Iterable[Document], is_todo: Callable[[Document], bool], tokenizer, config: EStepConfig, window: int
) -> Iterator[tuple[list[ChunkJob], dict[int, Document]]]:
    """The chunks of ``documents`` in fixed windows of ``config.batch_prompts``, finished documents
    included, yielding only the windows that hold a chunk of a document for which ``is_todo``
    holds: each window's jobs (``job.document_index``: the document's position in ``documents``)
    and those documents by position.

    The windows do not depend on what is finished, so a resumed run samples and scores every chunk
    with the same neighbours (the same padding, the same kernels) as an uninterrupted run, and
    writes the same bytes. A window that also holds chunks of finished documents recomputes them;
    the caller drops those results. ``documents`` is read once, one document at a time, and a
    document is tokenized only when a window needs it.
    """
    tokenized: dict[int, list[ChunkJob]] = {}
    current: list[tuple[int, Document, int]] = []

    def emit() -> tuple[list[ChunkJob], dict[int, Document]] | None:
        involved = {position: document for position, document, _ in current}
        if not any(is_todo(document) for document in involved.values()):
            return None
        for position in [p for p in tokenized if p < min(involved)]:
            del tokenized[position]
        jobs = []
        for position, document, chunk_index in current:
            if position not in tokenized:
                tokenized[position] = list(chunk_jobs([document], tokenizer, config, window))
                for job in tokenized[position]:
                    job.document_index = position
            jobs.append(tokenized[position][chunk_index])
        return jobs, involved

    for position, document in enumerate(documents):
        for chunk_index in range(len(document.chunks)):
            current.append((position, document, chunk_index))
            if len(current) == config.batch_prompts:
                batch = emit()
                current = []
                if batch:
                    yield batch
    if current:
        batch = emit()
        if batch:
            yield batch


def run_estep(
    model,
    tokenizer,
    m: MarkerIds,
    documents: Iterable[Document],
    config: EStepConfig,
    partial_path: Path,
    config_key: str,
    finished: Collection[str] = (),
    todo_chunks: int | None = None,
) -> None:
    """Run the E-step over ``documents``, appending each finished document to ``partial_path`` and
    skipping those already there or named in ``finished`` (ids written to another shard's partial
    file by an earlier run).

    ``documents`` (a list, or a ``DocumentRange`` that holds none) is read one document at a time:
    once to count the chunks left to do (unless ``todo_chunks`` gives that count) and once to work.
    Batches are ``batch_windows``: a resumed run writes the same bytes as an uninterrupted one.
    """
    backend = as_backend(model, tokenizer, config)
    window = config.context_window or backend.context_window
    partial = PartialDocuments(partial_path, config_key, keep=False)

    def is_todo(document: Document) -> bool:
        return document.id not in partial.done and document.id not in finished

    results: dict[int, list[Any]] = {}
    with progress_bar(
        total=todo_chunks if todo_chunks is not None else sum(len(d.chunks) for d in documents if is_todo(d)),
        desc=f"E-step {run_name(partial_path)}",
        unit="chunk",
        disable=None,
    ) as progress:
        for batch, involved in batch_windows(documents, is_todo, tokenizer, config, window):
            counted = sum(is_todo(involved[job.document_index]) for job in batch)
            for job, result in zip(batch, run_batch(backend, tokenizer, batch, m, config)):
                document = involved[job.document_index]
                if not is_todo(document):
                    continue  # finished before the interruption: kept as written
                slots = results.setdefault(job.document_index, [None] * len(document.chunks))
                slots[job.chunk_index] = result
                if all(r is not None for r in slots):
                    partial.add(_with_latents(document, results.pop(job.document_index)))
            progress.update(counted)


def _with_latents(document: Document, results: list[dict[str, Any]]) -> Document:
    chunks = []
    for chunk, result in zip(document.chunks, results):
        extra = {key: value for key, value in chunk.extra.items() if key not in result}
        extra.update({key: value for key, value in result.items() if key != "latent"})
        chunks.append(type(chunk)(text=chunk.text, prefix=chunk.prefix, latent=result["latent"], extra=extra))
    return Document(id=document.id, chunks=chunks, meta=document.meta)


class Summary:
    """The E-step's summary, fed one output record at a time."""

    def __init__(self) -> None:
        self.documents = self.chunks = self.unfinished = self.non_retokenizing = self.text_cut = 0
        self.iwae = self.ess = 0.0

    def add(self, row: dict[str, Any]) -> None:
        self.documents += 1
        for chunk in row["chunks"]:
            self.chunks += 1
            self.iwae += chunk["iwae"]
            self.ess += chunk["ess"]
            self.unfinished += not chunk["latent_finished"]
            self.non_retokenizing += not chunk["latent_retokenizes"]
            self.text_cut += chunk["text_tokens_cut"] > 0

    def to_json(self) -> dict[str, float]:
        n = max(1, self.chunks)
        return {
            "documents": self.documents,
            "chunks": self.chunks,
            "mean_iwae": self.iwae / n if self.chunks else 0.0,
            "mean_ess": self.ess / n if self.chunks else 0.0,
            "unfinished_latent_share": self.unfinished / n,
            "non_retokenizing_share": self.non_retokenizing / n,
            "chunks_with_text_cut": self.text_cut,
        }


def estep_shard(
    model_dir: Path,
    documents: list[Document] | DocumentRange,
    config: EStepConfig,
    dtype: torch.dtype,
    partial_path: Path,
    config_key: str,
    device: str = "auto",
    finished: Collection[str] = (),
) -> dict[str, int]:
    """One shard, in whatever process runs it: load the backend, run, append to ``partial_path``.

    ``documents`` is the whole shard (a ``DocumentRange`` of the input), finished documents
    included, so that its batches are the same on every resume (``run_estep``); ``finished``
    names those written to another partial file. Returns how many of its documents this call
    computed (the rest were in the partial file).
    """
    tokenizer = load_tokenizer(model_dir)
    already = PartialDocuments(partial_path, config_key, keep=False).done
    todo = todo_chunks = 0
    for document in documents:  # one pass counts what is left; run_estep's pass does the work
        if document.id not in already and document.id not in finished:
            todo += 1
            todo_chunks += len(document.chunks)
    if todo:
        backend = make_backend(config.backend, model_dir, tokenizer, dtype, config.max_batch_tokens, device)
        run_estep(
            backend,
            tokenizer,
            marker_ids(tokenizer),
            documents,
            config,
            partial_path,
            config_key,
            finished,
            todo_chunks=todo_chunks,
        )
    return {"documents": len(documents), "computed": todo}


def estep_stage(
    model_dir: Path,
    input_path: Path,
    output_path: Path,
    config: EStepConfig,
    dtype: torch.dtype = torch.float32,
    executor: ExecutorConfig | None = None,
    device: str = "auto",
    overwrite: bool | None = None,
    limit: int | None = None,
    strict: bool = False,
) -> dict[str, float]:
    """``bolt estep``: read chunks, resample latents with the model at ``model_dir``, write ``output_path``.

    The input is split into ``executor.workers`` contiguous shards (those with nothing left to
    do are skipped); finished documents go to ``OUT.run/partial.jsonl`` (one worker) or
    ``OUT.run/partial-<shard>.jsonl`` as they complete, and a rerun with the same model, input and
    config (any number of workers) continues from there. The latents do not depend on the executor
    or the worker count; the bytes of a rerun with the same worker count are those of an
    uninterrupted run (``batch_windows``). ``device`` and ``dtype`` place the HF engine (``auto``: a
    GPU when there is one); they are not part of the resume key, so a run started on one device can
    be finished on another. ``overwrite``: replace an output of another config
    (``bolt.core.rundir.RunDir.claim``). ``limit``: only the first N documents of the input (part of
    the config: another limit is another output). ``strict``: most chosen latents cut at the budget
    is an error, raised before the output is written.
    """
    if limit is not None and limit < 1:
        raise BoltError(f"--limit must be at least 1, got {limit}.")
    config.validate()
    resolve_device(device)  # a wrong device fails here, before any worker starts
    # a missing, unfinished or damaged model: one line, before any warning about it or any output
    check_model_dir(model_dir)
    executor = executor or ExecutorConfig()
    executor.validate()
    stage_config = {
        "model": str(model_dir),
        "model_fingerprint": model_fingerprint(model_dir),
        "input": str(input_path),
        "estep": config,
    }
    if limit is not None:
        stage_config["limit"] = limit

    def work(run) -> dict[str, float]:
        warning = latent_model_warning(Path(model_dir))
        if warning:
            warnings.warn(warning, stacklevel=3)
        marker_ids(load_tokenizer(model_dir))  # a model without the markers fails here, before any worker starts
        require_file(input_path)
        key = partial_key(stage_config, input_path)
        finished = frozenset(finished_documents(run.path, key, keep=False))
        # one pass checks the input and notes where each document starts: no step holds the corpus in memory
        scan = DocumentScan(input_path, limit, finished)
        if scan.latent_chunks:
            # bolt.latents/1 is bolt.chunks/1 with latents added (docs/FORMATS.md): a valid input, whose
            # latents the E-step replaces
            warnings.warn(
                f"{input_path} already holds latents ({scan.latent_chunks} chunks, bolt.latents/1): "
                "the E-step ignores them and samples new ones from the model; "
                "pass the chunks file (`bolt chunk` output) to silence this.",
                stacklevel=3,
            )
        # shards of the whole input (ranges each worker reads itself), finished documents included: a rerun with
        # the same worker count batches every chunk as the uninterrupted run did (another count: the same latents)
        paths = shard_partial_paths(run.path, min(executor.workers, len(scan)))
        jobs = [
            (model_dir, shard, config, dtype, paths[index], key, device, finished)
            for index, shard in scan.shards(executor.workers)
        ]
        run_shards(estep_shard, jobs, executor, desc="E-step shards")
        summary = Summary()

        def rows() -> Iterator[dict[str, Any]]:
            """The output, merged from the partial files in input order one record at a time; the check on the
            whole runs at the end, inside the write, so that --strict leaves no output."""
            for row in merged_documents(run.path, key, scan.ids()):
                summary.add(row)
                yield row
            share = summary.to_json()["unfinished_latent_share"]
            if share > 0.5:
                from bolt.core.quality import warn

                warn(
                    f"{share:.0%} of chosen latents never reached <|END_OF_LATENT|> within "
                    f"{config.sampling.max_new_tokens} tokens: the model has probably not learned the latent format. "
                    "Train it on latent data first, or raise the latent budget "
                    "(--max-new-tokens of `bolt estep`, --max-latent-tokens of `bolt em`).",
                    strict,
                    "the sampled latents are kept in the run directory, "
                    "so a rerun without --strict writes them without sampling again",
                )

        write_jsonl(output_path, rows())
        summary = summary.to_json()
        for path in run.path.glob("partial*.jsonl"):
            path.unlink()
        return summary

    return run_stage(
        "estep",
        run_dir_for_file(output_path),
        output_path,
        stage_config,
        work,
        inputs={"chunks": input_path},
        seed=config.seed,
        overwrite=overwrite,
    )


def latent_model_warning(model_dir: Path) -> str | None:
    """A warning when a model directory does not look trained on latents by bolt."""
    manifest = model_dir / "manifest.json"
    if not manifest.exists():
        return (
            f"{model_dir} has no bolt training manifest: "
            "if it was never trained on latent data, its posterior samples will be noise."
        )
    layout = json.loads(manifest.read_text()).get("config", {}).get("layout")
    if layout in ("raw", "pure"):
        return (
            f"{model_dir} was trained with --layout {layout}, without latent markers in context: "
            "its posterior samples will be noise."
        )
    return None


def estimate(
    model_dir: Path,
    input_path: Path,
    config: EStepConfig,
    dtype: torch.dtype = torch.float32,
    device: str = "auto",
    workers: int = 1,
    sample_chunks: int = 32,
) -> dict[str, float]:
    """``bolt estep --estimate``: time the E-step on ``sample_chunks`` chunks spread over the input,
    with the user's model, device, dtype, K and budget, and project the whole input's wall time on
    ``workers`` such workers and its device-hours. Writes nothing; the output path is left alone.

    The timed chunks are taken at even intervals over the input, so the projection sees the
    corpus's mix of short and long chunks and prefixes; a model that rarely closes its latents runs
    every sample to the budget, which the projection then includes (its ``unfinished_latent_share``
    says so)."""
    if sample_chunks < 1:
        raise BoltError(f"--estimate takes a number of chunks of at least 1, got {sample_chunks}.")
    config.validate()
    check_model_dir(model_dir)
    tokenizer = load_tokenizer(model_dir)
    m = marker_ids(tokenizer)
    documents = read_documents(input_path)
    total_chunks = sum(len(d.chunks) for d in documents)
    if not total_chunks:
        raise BoltError(f"{input_path}: no chunks to estimate the E-step on.")
    # chunks at even intervals over the whole input, each with the prefix it carries (as the E-step reads it)
    every = [(document, chunk) for document in documents for chunk in document.chunks]
    picked = sorted(
        set(np.linspace(0, total_chunks - 1, num=min(total_chunks, sample_chunks)).round().astype(int).tolist())
    )
    chosen = [Document(id=every[i][0].id, chunks=[every[i][1]], meta=every[i][0].meta) for i in picked]
    backend = make_backend(config.backend, model_dir, tokenizer, dtype, config.max_batch_tokens, device)
    window = config.context_window or backend.context_window
    jobs = list(chunk_jobs(chosen, tokenizer, config, window))
    run_batch(backend, tokenizer, jobs[:1], m, config)  # warm-up: first-call allocations are not the E-step's rate
    started, rows = time.perf_counter(), []
    for begin in range(0, len(jobs), config.batch_prompts):
        rows += run_batch(backend, tokenizer, jobs[begin : begin + config.batch_prompts], m, config)
    seconds = time.perf_counter() - started
    rate = len(jobs) / seconds
    hours = total_chunks / rate / 3600
    return {
        "chunks_timed": len(jobs),
        "seconds": seconds,
        "chunks_per_second": rate,
        "sampled_tokens_per_second": sum(r["sampled_tokens"] for r in rows) / seconds,
        "unfinished_latent_share": sum(not r["latent_finished"] for r in rows) / len(rows),
        "input_chunks": total_chunks,
        "workers": workers,
        "projected_wall_hours": hours / workers,
        "projected_device_hours": hours,
    }
