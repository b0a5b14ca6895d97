"""Stage 1b: a teacher writes a latent for every chunk, or rephrases every document (``bolt synthesize``).

Reads ``bolt.chunks/1`` and writes ``bolt.latents/1`` (``--method latent``), or, for the
rephrasing baselines (``--method wrap`` / ``wrap-cot``), the same documents with a
document-level ``meta.synthetic`` text that ``--layout pure`` trains on.

Two kinds of teacher: local ones (``hf``, ``oracle``) write latents in groups of
``batch_size``; prompt teachers (the chat APIs, vLLM) answer rendered prompts, and their
answers are kept in a SQLite cache (``teacher-cache.sqlite`` in the run directory, or
``--cache-dir``) so a rerun sends only what is still unanswered.

Documents are split into shards run by an executor (bolt.core.executors: in this process or
on Ray), each with its own teacher built from a ``TeacherSpec``; finished documents go
to one partial file per shard, so an interrupted run resumes with any worker count, and
the output is those files merged in input order.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bolt.core.choices import Method
from bolt.core.executors import ExecutorConfig, run_shards, split_shards
from bolt.core.progress import progress_bar
from bolt.core.quality import is_repetitive, warn
from bolt.core.records import (
    Chunk,
    Document,
    DocumentRange,
    DocumentScan,
    PartialDocuments,
    finished_documents,
    is_chunked_file,
    merged_documents,
    read_corpus,
    read_documents,
    require_file,
    shard_partial_paths,
    write_json,
    write_jsonl,
)
from bolt.core.rundir import RunDir, partial_key, run_dir_for_file, run_stage
from bolt.core.scrub import scrub, scrub_data
from bolt.errors import BoltError
from bolt.teachers.base import LatentRequest, PricedTeacher, PromptTeacher, Teacher, TeacherSpec
from bolt.teachers.prompts import METHODS, PromptTemplate, load_templates

CACHE_NAME = "teacher-cache.sqlite"
TRUNCATED = "teacher_truncated"
"""A chunk field, true where a local teacher's latent was cut at --max-new-tokens (absent otherwise)."""


@dataclass
class SynthesizeConfig:
    """What the teacher writes and how chunks are sent to it."""

    method: Method = "latent"
    """What the teacher writes: latent thoughts, a WRAP rephrasing, or a rephrasing with inserted reasoning
    (wrap-cot)."""
    prompt_file: Path | None = None
    """JSON prompt template(s) replacing the built-in ones of --method (see `bolt.teachers.prompts`)."""
    seed: int = 0
    """Draws each document's ``wrap`` style."""
    batch_size: int = 8
    """Chunks per call of a local teacher, hf or oracle."""
    allow_failures: bool = False
    """Finish with the documents that got every answer when some requests got none."""

    def validate(self) -> None:
        if self.batch_size < 1:
            raise BoltError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if self.method not in METHODS:
            raise BoltError(f"unknown --method {self.method!r}; choose one of {', '.join(METHODS)}.")


@dataclass(frozen=True)
class Slot:
    """Where one prompt's answer goes: a chunk's latent, or (``chunk`` None) a document's synthetic text."""

    document: int
    chunk: int | None
    style: str


def wrap_style(styles: list[str], seed: int, document_id: str) -> str:
    digest = hashlib.sha256(f"{seed}\0{document_id}".encode()).digest()
    return sorted(styles)[int.from_bytes(digest[:8], "little") % len(styles)]


def build_prompts(
    documents: list[Document], config: SynthesizeConfig, templates: dict[str, PromptTemplate]
) -> tuple[list, list[Slot]]:
    """A prompt per chunk (``latent``) or per document (``wrap``, ``wrap-cot``), and where each answer goes."""
    from bolt.teachers.api_teacher import Prompt

    prompts, slots = [], []
    for d, document in enumerate(documents):
        if config.method == "latent":
            template = next(iter(templates.values()))
            for c, chunk in enumerate(document.chunks):
                prompts.append(Prompt(template.messages(chunk.prefix, chunk.text), template.version))
                slots.append(Slot(d, c, "default"))
        else:
            style = wrap_style(list(templates), config.seed, document.id)
            prompts.append(Prompt(templates[style].messages("", document.text), templates[style].version))
            slots.append(Slot(d, None, style))
    return prompts, slots


def assemble(
    documents: list[Document],
    slots: list[Slot],
    answers: list[str | None],
    config: SynthesizeConfig,
    templates: dict[str, PromptTemplate],
) -> list[Document]:
    """Documents whose every prompt got an answer, with the answers in place."""
    latents: dict[int, dict[int, str]] = {}
    synthetic: dict[int, tuple[str, str]] = {}
    failed: set[int] = set()
    for slot, answer in zip(slots, answers):
        if answer is None:
            failed.add(slot.document)
        elif slot.chunk is None:
            synthetic[slot.document] = (answer, slot.style)
        else:
            latents.setdefault(slot.document, {})[slot.chunk] = answer
    done = []
    for d, document in enumerate(documents):
        if d in failed:
            continue
        if config.method == "latent":
            chunks = [
                Chunk(text=c.text, prefix=c.prefix, latent=latents[d][i], extra=c.extra)
                for i, c in enumerate(document.chunks)
            ]
            done.append(Document(id=document.id, chunks=chunks, meta=document.meta))
        else:
            text, style = synthetic[d]
            done.append(with_synthetic(document, text, config.method, style, templates[style].version))
    return done


def with_synthetic(document: Document, text: str, method: str, style: str, template: str) -> Document:
    """``document`` carrying a rephrased version of itself (docs/FORMATS.md, "Rephrased documents")."""
    meta = {
        **document.meta,
        "synthetic": text,
        "synthetic_method": method,
        "synthetic_style": style,
        "synthetic_template": template,
    }
    return Document(id=document.id, chunks=document.chunks, meta=meta)


def read_inputs(input_path: Path, method: str) -> list[Document]:
    """Chunked documents; the rephrasing methods also take a raw corpus (one chunk per document)."""
    if method != "latent" and not is_chunked_file(input_path):
        return [Document(id=d.id, chunks=[Chunk(text=d.text)], meta=d.meta) for d in read_corpus(input_path)]
    return read_documents(input_path)


def synthesize_documents(
    teacher: Teacher,
    documents: Iterable[Document],
    config: SynthesizeConfig,
    partial: PartialDocuments,
    finished: Collection[str] = (),
) -> None:
    """Write the latents of every document in neither ``partial`` nor ``finished`` (ids written to
    another shard's partial file by an earlier run), ``config.batch_size`` chunks at a time.

    ``documents`` is read twice (to count, then to work), one window at a time: a list, or a
    ``DocumentRange`` that holds no documents. Batches are fixed windows over all of its chunks,
    finished documents included, so that a resumed run gives a local teacher every chunk in the
    same batch (the same padding) as an uninterrupted run; windows with nothing left to write
    are skipped.
    """

    def pending(document: Document) -> bool:
        return document.id not in partial.done and document.id not in finished

    def windows() -> Iterator[list[tuple[Document, int]]]:
        window: list[tuple[Document, int]] = []
        for document in documents:
            for index in range(len(document.chunks)):
                window.append((document, index))
                if len(window) == config.batch_size:
                    yield window
                    window = []
        if window:
            yield window

    slots: dict[str, list[tuple[str, bool] | None]] = {}
    with progress_bar(
        total=sum(len(d.chunks) for d in documents if pending(d)),
        desc=f"synthesize ({teacher.name})",
        unit="chunk",
        disable=None,
    ) as progress:
        for window in windows():
            counted = sum(pending(document) for document, _ in window)
            if not counted:
                continue
            batch = [
                LatentRequest(document.id, index, document.chunks[index].prefix, document.chunks[index].text)
                for document, index in window
            ]
            answers = teacher.write_latents(batch)
            if len(answers) != len(batch):
                raise RuntimeError(f"teacher {teacher.name} returned {len(answers)} latents for {len(batch)} requests")
            cut = list(getattr(teacher, "last_truncated", None) or []) or [False] * len(batch)
            for (document, index), answer, truncated in zip(window, answers, cut):
                if not pending(document):
                    continue  # finished before an interruption: kept as written
                entry = slots.setdefault(document.id, [None] * len(document.chunks))
                entry[index] = (answer, truncated)
                if all(slot is not None for slot in entry):
                    chunks = [
                        Chunk(
                            text=c.text, prefix=c.prefix, latent=z, extra={**c.extra, TRUNCATED: True} if t else c.extra
                        )
                        for c, (z, t) in zip(document.chunks, entry)
                    ]
                    partial.add(Document(id=document.id, chunks=chunks, meta=document.meta))
                    del slots[document.id]
            progress.update(counted)


def synthesize_shard(
    source: Teacher | TeacherSpec,
    documents: list[Document] | DocumentRange,
    config: SynthesizeConfig,
    templates: dict[str, PromptTemplate] | None,
    partial_path: Path,
    config_key: str,
    cache_path: Path,
    finished: Collection[str] = (),
) -> dict[str, Any]:
    """One shard, in whatever process runs it: build its own teacher from ``source`` (a spec) and
    append the documents it finishes to ``partial_path``.

    A local teacher appends each document as its last chunk is written; a prompt teacher
    commits each answer to the shared cache at ``cache_path`` as it arrives and appends the
    shard's complete documents at the end. Either way a worker that dies loses only the
    items in flight. Returns counts, and a prompt teacher's failures and spend.
    """
    teacher = source.build() if isinstance(source, TeacherSpec) else source
    if templates is None:
        # a local teacher: every document of the shard, one window at a time (its batches do not move on a resume)
        partial = PartialDocuments(partial_path, config_key, keep=False)
        computed = sum(1 for document in documents if document.id not in partial.done and document.id not in finished)
        synthesize_documents(teacher, documents, config, partial, finished)
        return {"documents": len(documents), "computed": computed}
    partial = PartialDocuments(partial_path, config_key)
    todo = [document for document in documents if document.id not in partial.done and document.id not in finished]
    result: dict[str, Any] = {"documents": len(documents), "computed": len(todo)}
    from bolt.teachers.cache import TeacherCache

    prompts, slots = build_prompts(todo, config, templates)
    cache = TeacherCache(cache_path)
    try:
        answers, failures = teacher.complete(prompts, cache)
    finally:
        cache.close()
    for document in assemble(todo, slots, answers, config, templates):
        partial.add(document)
    return {**result, "failures": failures, "spend": teacher.spend.to_json()}


class LatentQuality:
    """Counts of empty, cut (at the token limit) and repeating latents, fed one output record at a time."""

    def __init__(self) -> None:
        self.documents = self.chunks = 0
        self.counts = {"empty_latents": 0, "truncated_latents": 0, "repetitive_latents": 0}

    def add(self, row: dict) -> None:
        self.documents += 1
        for chunk in row.get("chunks", []):
            if "latent" in chunk:
                self.chunks += 1
                self.counts["empty_latents"] += not (chunk["latent"] or "").strip()
                self.counts["truncated_latents"] += bool(chunk.get(TRUNCATED))
                self.counts["repetitive_latents"] += is_repetitive(chunk["latent"] or "")

    def warn(self, teacher: Any, strict: bool = False) -> dict:
        """A warning (an error with ``strict``) for each kind found; returns the counts."""
        counts, chunks = self.counts, self.chunks
        fix = "rerun without --strict to write them anyway; the latents computed so far are kept"
        if counts["empty_latents"] and not getattr(teacher, "allows_empty_latents", False):
            warn(
                f"the teacher returned {counts['empty_latents']} empty latent(s) of {chunks}; "
                "check the teacher model and prompt.",
                strict,
                fix,
            )
        if counts["truncated_latents"]:
            budget = getattr(getattr(teacher, "sampling", None), "max_new_tokens", None)
            warn(
                f"{counts['truncated_latents']} of {chunks} latents were cut at the token limit"
                f"{f' ({budget} tokens)' if budget else ''} before the teacher ended them: "
                "raise --max-new-tokens, or use a teacher model that follows the prompt (an instruct/chat model)",
                strict,
                fix,
            )
        if counts["repetitive_latents"]:
            warn(
                f"{counts['repetitive_latents']} of {chunks} latents repeat themselves "
                "(half or more of their 4-word sequences recur: a decoding loop); "
                "try a larger or instruction-tuned teacher, sampling (--temperature 0.7), or another --prompt-file",
                strict,
                fix,
            )
        return dict(counts)


def latent_quality(rows: Iterable[dict], teacher: Any, strict: bool = False) -> dict:
    """Counts of empty, cut (at the token limit) and repeating latents, with a warning (an error with
    ``strict``) for each kind found."""
    quality = LatentQuality()
    for row in rows:
        quality.add(row)
    return quality.warn(teacher, strict)


CAPPED = "not sent: --max-spend"
"""How a request held back by ``ApiConfig.max_spend`` is recorded among the failures."""


def _finish_local(teacher: Teacher, rows: Iterable[dict], output_path: Path, strict: bool = False) -> dict:
    """Write ``rows`` as they come, counting their quality; with ``strict``, a warning found at the end
    is raised inside the write, so the output is not put in place."""
    quality, chunks = LatentQuality(), 0

    def counted() -> Iterator[dict]:
        nonlocal chunks
        for row in rows:
            quality.add(row)
            chunks += len(row["chunks"])
            yield row
        quality.warn(teacher, strict)

    write_jsonl(output_path, counted())
    return {"documents": quality.documents, "chunks": chunks, **quality.counts}


def _finish_prompts(
    teacher: Any,
    documents: list[Document],
    rows: list[dict],
    results: list[dict],
    run: RunDir,
    output_path: Path,
    config: SynthesizeConfig,
    templates: dict[str, PromptTemplate],
    cache_path: Path,
    strict: bool = False,
) -> dict:
    """Merge the shards' failures and spend (spend.json: their sum, and every answer used, counted once),
    write the output."""
    from bolt.teachers.cache import TeacherCache
    from bolt.teachers.chat import Spend

    failures = {key: reason for result in results for key, reason in result["failures"].items()}
    prompts, _ = build_prompts(documents, config, templates)
    if isinstance(teacher, PricedTeacher):
        cache = TeacherCache(cache_path)
        try:
            teacher.use_answers([key for key, _ in teacher.requests(prompts)], cache)
        finally:
            cache.close()
    spend = teacher.report(Spend.total([result["spend"] for result in results]))
    write_json(run.path / "spend.json", spend)
    # the reasons quote the provider, who may quote the API key back
    write_jsonl(
        run.path / "failures.jsonl",
        [{"request_key": key, "reason": scrub(reason)} for key, reason in sorted(failures.items())],
    )
    quality = (
        {key: value for key, value in latent_quality(rows, teacher, strict).items() if key != "truncated_latents"}
        if config.method == "latent"
        else {}
    )
    write_jsonl(output_path, rows)
    capped = sum(reason.startswith(CAPPED) for reason in failures.values())
    if capped:
        message = (
            f"--max-spend reached: {capped} request(s) not sent, whose worst case would have gone over it "
            f"(this run spent {spend['this_run'].get('cost_usd') or 0:.4f} USD). "
            f"{output_path} holds the {len(rows)} complete documents; the answers are cached, "
            "so rerunning with a higher --max-spend (or without it) sends only what is unanswered."
        )
        if not config.allow_failures:
            raise BoltError(message)
        warnings.warn(message, stacklevel=2)
    if failures and not config.allow_failures:
        raise BoltError(
            f"{len(failures)} request(s) got no usable answer "
            f"({sum(spend['this_run']['bad_replies'].values())} bad replies, "
            f"{sum(spend['this_run']['errors'].values())} errors this run; reasons in {run.path / 'failures.jsonl'}). "
            f"{output_path} holds the {len(rows)} complete documents. "
            "Rerun the same command to retry only the failed requests, or add --allow-failures to finish without them."
        )
    return {
        "documents": len(rows),
        "prompts": len(prompts),
        "failed_requests": len(failures),
        "failed_documents": len(documents) - len(rows),
        **quality,
        "spend": spend,
    }


def synthesize_stage(
    teacher: Teacher | TeacherSpec,
    input_path: Path,
    output_path: Path,
    config: SynthesizeConfig,
    cache_dir: Path | None = None,
    executor: ExecutorConfig | None = None,
    overwrite: bool | None = None,
    strict: bool = False,
    limit: int | None = None,
) -> dict:
    """``bolt synthesize``: a latent for every chunk (or a rephrasing of every document) of ``input_path``,
    written to ``output_path``.

    The unfinished documents are split into ``executor.workers`` contiguous shards, each run
    by its own teacher built from the spec ``teacher`` (a live teacher object runs only as
    one local shard). Shards append finished documents to ``OUT.run/partial.jsonl`` (one
    worker) or ``OUT.run/partial-<shard>.jsonl``; API answers go to one SQLite cache that all
    workers share. A rerun with the same input and config, any number of workers, continues
    from there. A local teacher's shards are fixed ranges of the input batched in fixed
    windows, so a rerun with the same worker count writes the bytes of an uninterrupted run
    (another count can batch a chunk with other neighbours: a teacher that pads may then
    differ in the last bits); API answers do not depend on the worker count.
    ``overwrite``: replace an output of another config (``bolt.core.rundir.RunDir.claim``); adding
    ``allow_failures`` after a run with failures is the same run, finished. ``strict``: a quality warning
    (empty, cut or repeating latents) is an error, raised before the output is written. ``limit``: only the
    first N documents of the input (a trial run; part of the config, so a run with another limit is another
    output).
    """
    if limit is not None and limit < 1:
        raise BoltError(f"--limit must be at least 1, got {limit}.")
    config.validate()
    executor = executor or ExecutorConfig()
    executor.validate()
    # here it only describes the teacher, renders keys and prices answers
    live = teacher.build() if isinstance(teacher, TeacherSpec) else teacher
    if not isinstance(teacher, TeacherSpec) and (executor.kind != "local" or executor.workers > 1):
        raise BoltError(
            "--workers above 1 or --executor ray builds a teacher in every worker: "
            "pass a TeacherSpec(name, options), not a teacher object."
        )
    # scrubbed here, before the run directory writes it to manifest.json: a --base-url may hold credentials
    stage_config: dict[str, Any] = {
        "input": str(input_path),
        "teacher": scrub_data(live.describe()),
        "synthesize": config,
    }
    templates = None
    if isinstance(live, PromptTeacher):
        templates = load_templates(config.prompt_file, config.method)
        stage_config["templates"] = sorted(template.version for template in templates.values())
    elif config.method != "latent":
        raise BoltError(
            f"--teacher {live.name} writes latents only; "
            f"--method {config.method} needs a prompt teacher (openai, anthropic, vllm)."
        )
    if limit is not None:
        stage_config["limit"] = limit

    def work(run: RunDir) -> dict:
        cache_path = (cache_dir or run.path) / CACHE_NAME
        if templates is None:
            return local_work(run, cache_path)
        documents = read_inputs(input_path, config.method)[:limit]
        key = partial_key(stage_config, input_path)
        done = finished_documents(run.path, key)
        # API answers do not depend on their batch: the unfinished documents are shared out evenly
        shards = split_shards([document for document in documents if document.id not in done], executor.workers)
        shard_args = [
            (teacher, shard, config, templates, path, key, cache_path)
            for shard, path in zip(shards, shard_partial_paths(run.path, len(shards)))
        ]
        results = run_shards(synthesize_shard, shard_args, executor, desc="synthesize shards")
        done = finished_documents(run.path, key)
        rows = [done[document.id] for document in documents if document.id in done]
        summary = _finish_prompts(
            live, documents, rows, results, run, output_path, config, templates, cache_path, strict
        )
        for path in run.path.glob("partial*.jsonl"):
            path.unlink()
        return summary

    def local_work(run: RunDir, cache_path: Path) -> dict:
        """A local teacher streams: shards read their own range of the input, the output is merged
        from the partial files one record at a time; no step holds the corpus in memory."""
        require_file(input_path)
        key = partial_key(stage_config, input_path)
        finished = frozenset(finished_documents(run.path, key, keep=False))
        scan = DocumentScan(input_path, limit, finished)  # every check of the input, first
        # shards of the whole input, finished documents included, so a resumed run batches as the first did
        paths = shard_partial_paths(run.path, min(executor.workers, len(scan)))
        shard_args = [
            (teacher, shard, config, None, paths[index], key, cache_path, finished)
            for index, shard in scan.shards(executor.workers)
        ]
        run_shards(synthesize_shard, shard_args, executor, desc="synthesize shards")
        summary = _finish_local(live, merged_documents(run.path, key, scan.ids()), output_path, strict)
        for path in run.path.glob("partial*.jsonl"):
            path.unlink()
        return summary

    return run_stage(
        "synthesize",
        run_dir_for_file(output_path),
        output_path,
        stage_config,
        work,
        inputs={"chunks": input_path},
        overwrite=overwrite,
        ignore=("allow_failures",),
    )


def synthesize_estimate(
    teacher: Any,
    input_path: Path,
    output_path: Path,
    config: SynthesizeConfig,
    cache_dir: Path | None = None,
    limit: int | None = None,
) -> dict:
    """``--dry-run``: requests, estimated tokens and cost of a run, sending nothing."""
    config.validate()
    if not isinstance(teacher, PricedTeacher):
        raise BoltError(f"--dry-run estimates API costs; --teacher {teacher.name} does not call an API.")
    from bolt.teachers.cache import TeacherCache

    templates = load_templates(config.prompt_file, config.method)
    prompts, _ = build_prompts(read_inputs(input_path, config.method)[:limit], config, templates)
    cache_path = (cache_dir or run_dir_for_file(output_path).path) / CACHE_NAME
    cache = TeacherCache(cache_path if cache_path.exists() else ":memory:")
    try:
        return teacher.estimate(prompts, cache)
    finally:
        cache.close()
