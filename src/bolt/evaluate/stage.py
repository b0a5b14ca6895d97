"""Stage 4: evaluation (docs/METHOD.md, "Evaluation").

- Raw-text NLL per token and per character: ``BOS X_1 ... X_N`` scored token by token,
  each chunk tokenised on its own exactly as in training (so NLL and the bounds share
  one denominator: the document's chunk tokens).
- ELBO / IWAE bounds per token, n in {1, 2, 4} by default: uniform chunking, the whole
  previous text as each chunk's prefix, K = max(n) posterior samples per chunk through
  the E-step's own code; bound_n(X) = sum over chunks of logsumexp(log w_1..n) - log n.
  Reported as NLL upper bounds (-bound / tokens): lower is better, and >= the true NLL.
- Answers with reasoning in latent space: the prompt ends with ``SoL PRIOR``, greedy
  decoding stops at the next SoL (or EOS), and the answer is read after EoL by an
  extraction hook (default: the first number). ``--direct`` asks without latents.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bolt.core.chunking import ChunkConfig, chunk_document
from bolt.core.layouts import encode
from bolt.core.modeling import (
    check_model_dir,
    context_window,
    load_model,
    load_tokenizer,
    model_fingerprint,
    resolve_device,
)
from bolt.core.progress import progress_bar
from bolt.core.quality import warn
from bolt.core.records import (
    Document,
    PartialDocuments,
    is_chunked_file,
    iter_jsonl,
    read_corpus,
    read_documents,
    write_json,
    write_jsonl,
)
from bolt.core.rundir import RunDir, partial_key, run_stage
from bolt.core.special_tokens import MarkerIds, has_latent_tokens, marker_ids
from bolt.errors import BoltError
from bolt.estep.config import EStepConfig, SamplingConfig
from bolt.estep.importance import iwae_bound
from bolt.estep.sampling import sample_continuations
from bolt.estep.scoring import score
from bolt.estep.stage import batch_windows, run_batch
from bolt.evaluate.config import DEFAULT_ANSWER_PATTERN, EvalConfig


def nll(
    model,
    tokenizer,
    documents: list[Document],
    m: MarkerIds,
    max_batch_tokens: int = 16384,
    documents_per_step: int = 64,
) -> dict[str, float]:
    """Raw-text NLL per token and per character (nats)."""
    window = context_window(model)
    total, tokens, chars = 0.0, 0, 0
    for begin in progress_bar(range(0, len(documents), documents_per_step), desc="NLL", unit="batch", disable=None):
        sequences = []
        for document in documents[begin : begin + documents_per_step]:
            ids = [token for chunk in document.chunks for token in encode(tokenizer, chunk.text)]
            start = [m.bos] if m.bos is not None else [m.eos]
            # Long documents are scored in windows that each restart from BOS.
            step = window - 1
            sequences.extend(start + ids[i : i + step] for i in range(0, len(ids), step))
            chars += len(document.text)
        total -= sum(score(model, sequences, [1] * len(sequences), max_batch_tokens, pad_id=tokenizer.pad_token_id))
        tokens += sum(len(seq) - 1 for seq in sequences)
    return {"nll_per_token": total / tokens, "nll_per_char": total / chars, "tokens": tokens, "chars": chars}


@dataclass
class _DocumentBounds:
    """One finished document of the bounds: per chunk, the K log weights and the chunk's tokens."""

    id: str
    log_w: list[list[float]]
    tokens: int

    def to_json(self) -> dict:
        return {"id": self.id, "log_w": self.log_w, "tokens": self.tokens}


def likelihood_bounds(
    model,
    tokenizer,
    documents: list[Document],
    m: MarkerIds,
    config: EvalConfig,
    partial_path: Path | None = None,
    config_key: str = "",
) -> dict[str, float]:
    """IWAE NLL upper bounds per token for each n in ``config.iwae_samples``.

    Each chunk goes through the E-step's own ``run_batch`` (K = max(n) samples, seeded per
    chunk) in the E-step's fixed ``batch_windows``. With ``partial_path``, finished documents
    are appended there and a rerun continues after them with the same batches, so the same
    numbers.
    """
    k = max(config.iwae_samples)
    estep = EStepConfig(
        samples=k,
        seed=config.seed,
        sampling=SamplingConfig(max_new_tokens=config.max_latent_tokens),
        batch_prompts=config.batch_prompts,
        keep_candidates=True,
    )
    window = context_window(model)
    partial = PartialDocuments(partial_path, config_key) if partial_path else None
    done = partial.done if partial else {}
    todo = {i for i, document in enumerate(documents) if document.id not in done}
    pending: dict[int, list] = {i: [None] * len(documents[i].chunks) for i in todo}
    model.eval()
    with progress_bar(
        total=sum(len(documents[i].chunks) for i in todo), desc="IWAE bounds", unit="chunk", disable=None
    ) as progress:
        for batch, _ in batch_windows(documents, lambda document: document.id not in done, tokenizer, estep, window):
            for job, result in zip(batch, run_batch(model, tokenizer, batch, m, estep)):
                if job.document_index not in pending:
                    continue  # finished before an interruption
                chunks = pending[job.document_index]
                chunks[job.chunk_index] = (
                    [candidate["log_w"] for candidate in result["candidates"]],
                    len(job.context.text),
                )
                if all(chunk is not None for chunk in chunks):
                    finished = _DocumentBounds(
                        documents[job.document_index].id, [w for w, _ in chunks], sum(t for _, t in chunks)
                    )
                    if partial:
                        partial.add(finished)
                    else:
                        done[finished.id] = finished.to_json()
                    del pending[job.document_index]
            progress.update(sum(job.document_index in todo for job in batch))
    records = [done[document.id] for document in documents]
    tokens = sum(record["tokens"] for record in records)
    totals = {
        n: sum(iwae_bound(log_w, n) for record in records for log_w in record["log_w"]) for n in config.iwae_samples
    }
    return {f"iwae{n}_nll_per_token": -totals[n] / tokens for n in config.iwae_samples} | {"bound_tokens": tokens}


def first_match_extractor(pattern: str) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)

    def extract(text: str) -> str | None:
        found = compiled.search(text)
        if not found:
            return None
        return found.group(1) if compiled.groups else found.group(0)

    return extract


def answer_questions(
    model,
    tokenizer,
    questions: list[dict],
    m: MarkerIds,
    config: EvalConfig,
    latent: bool = True,
    extract: Callable[[str], str | None] | None = None,
) -> dict:
    """Greedy answers, with reasoning in latent space when ``latent``; returns accuracy and outputs."""
    extract = extract or first_match_extractor(config.answer_pattern)
    start = [m.bos] if m.bos is not None else []
    prompts = [start + encode(tokenizer, q["prompt"]) + ([m.sol, m.prior] if latent else []) for q in questions]
    stop = {m.sol, m.eos}  # with or without latents, an answer ends at EOS or where the next latent would begin
    sampling = SamplingConfig(max_new_tokens=config.max_answer_tokens, greedy=True)
    outputs = []
    model.eval()
    for begin in progress_bar(range(0, len(prompts), config.batch_prompts), desc="answers", unit="batch", disable=None):
        batch = prompts[begin : begin + config.batch_prompts]
        for sample in sample_continuations(model, batch, 1, stop, sampling, pad_id=tokenizer.pad_token_id):
            ids = [t for t in sample[0].token_ids if t not in stop]
            if latent:
                thought_ids, answer_ids = (
                    (ids[: ids.index(m.eol)], ids[ids.index(m.eol) + 1 :]) if m.eol in ids else (ids, [])
                )
            else:
                thought_ids, answer_ids = [], ids
            outputs.append({"latent": tokenizer.decode(thought_ids), "answer_text": tokenizer.decode(answer_ids)})
    correct = empty = unparseable = 0
    for question, output in zip(questions, outputs):
        output["extracted"] = extract(output["answer_text"])
        output["correct"] = output["extracted"] is not None and output["extracted"] == str(question["answer"]).strip()
        output["id"] = question.get("id")
        correct += output["correct"]
        if not output["answer_text"].strip():
            empty += 1  # with latents: no latent ever closed (no EoL within --max-answer-tokens), or nothing after it
        elif output["extracted"] is None:
            unparseable += 1
    return {
        "accuracy": correct / max(1, len(questions)),
        "questions": len(questions),
        "empty_answers": empty,
        "unparseable_answers": unparseable,
        "outputs": outputs,
    }


def answer_warnings(answered: dict, config: EvalConfig, latent: bool, strict: bool = False) -> None:
    """A warning (an error with ``strict``) when most answers are empty or unreadable: an accuracy of 0 that
    says nothing about the task."""
    n, empty, unparseable = answered["questions"], answered["empty_answers"], answered["unparseable_answers"]
    if n and (empty + unparseable) * 2 > n:
        why = []
        if empty:
            why.append(
                f"{empty} empty" + (" (no latent ever closed: no EoL within --max-answer-tokens)" if latent else "")
            )
        if unparseable:
            why.append(f"{unparseable} that --answer-pattern {config.answer_pattern!r} cannot read")
        fix = (
            "train the model on latent data (or longer), raise --max-answer-tokens, "
            "or measure the base model with --direct"
            if latent and empty * 2 > n
            else "fix --answer-pattern to match the answers' form"
        )
        warn(
            f"{empty + unparseable} of {n} answers are unusable ({', '.join(why)}), "
            f"so the accuracy says little: {fix}.",
            strict,
        )


def extracted_part(pattern: str) -> str:
    """The part of ``pattern`` whose text is the extracted answer: its first capturing group's source
    (``= (\\d+)\\.`` -> ``\\d+``), or the whole pattern when it has none."""
    depth, start, in_class, i = 0, None, False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":
                i += 1
        elif char == "(":
            depth += 1
            named = pattern.startswith("?P<", i + 1)
            if start is None and (not pattern.startswith("?", i + 1) or named):
                start, open_depth = (pattern.index(">", i) + 1 if named else i + 1), depth
        elif char == ")":
            if start is not None and depth == open_depth:
                return pattern[start:i]
            depth -= 1
        i += 1
    return pattern


def gold_answer_check(questions: list[dict], config: EvalConfig, strict: bool = False) -> int:
    """How many gold answers the answer pattern can never reproduce (the pattern applied to the gold text
    does not give it back), with a warning (an error with ``strict``) when there are any."""
    answer = re.compile(extracted_part(config.answer_pattern))
    golds = [str(q["answer"]).strip() for q in questions]
    never = [gold for gold in golds if not answer.fullmatch(gold)]
    if never:
        default = config.answer_pattern == DEFAULT_ANSWER_PATTERN
        warn(
            f"{len(never)} of {len(golds)} gold answers (e.g. {never[0][:40]!r}) can never match "
            + (
                "the default --answer-pattern, which reads a number"
                if default
                else f"--answer-pattern {config.answer_pattern!r}"
            )
            + ": those questions count as wrong whatever the model says; "
            "pass an --answer-pattern that reads them (e.g. '[A-D]' or '\\w+')",
            strict,
        )
    return len(never)


def evaluate_model(
    model_dir: Path,
    documents: list[Document] | None,
    questions: list[dict] | None,
    config: EvalConfig,
    latent: bool = True,
    partial_path: Path | None = None,
    config_key: str = "",
    device: str = "auto",
    strict: bool = False,
) -> dict:
    """Every metric that applies: NLL (and bounds, for latent models, resumable through ``partial_path``) on
    documents, accuracy on questions."""
    config.validate()
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, device=device).eval()
    m = marker_ids(tokenizer) if latent or has_latent_tokens(tokenizer) else direct_ids(tokenizer)
    results: dict = {"model": str(model_dir)}
    if documents:
        results.update(nll(model, tokenizer, documents, m))
        if latent:
            results.update(likelihood_bounds(model, tokenizer, documents, m, config, partial_path, config_key))
    if questions:
        answered = answer_questions(model, tokenizer, questions, m, config, latent=latent)
        answer_warnings(answered, config, latent, strict)
        results["accuracy"] = answered["accuracy"]
        results["questions"] = answered["questions"]
        results["empty_answers"] = answered["empty_answers"]
        results["unparseable_answers"] = answered["unparseable_answers"]
        results["answers"] = answered["outputs"]
    return results


def direct_ids(tokenizer) -> MarkerIds:
    """A base model's delimiters for ``--direct``: no latent markers (ids that never occur), its BOS and EOS."""
    if tokenizer.eos_token_id is None:
        raise BoltError("the tokenizer has no EOS token; set `eos_token` in its tokenizer_config.json.")
    return MarkerIds(sol=-1, eol=-1, prior=-1, post=-1, bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id)


def read_questions(path: Path) -> list[dict]:
    questions = []
    for line_number, row in iter_jsonl(path):
        if not isinstance(row.get("prompt"), str) or "answer" not in row:
            raise BoltError(f"{path}:{line_number}: a question needs a string 'prompt' and an 'answer'.")
        questions.append(row)
    if not questions:
        raise BoltError(f"{path}: no questions found.")
    return questions


def load_eval_documents(path: Path, uniform_units: int) -> list[Document]:
    """Held-out documents: a chunked file as it is, or a raw corpus chunked uniformly with all previous text as
    prefix."""
    if is_chunked_file(path):
        return read_documents(path)
    config = ChunkConfig(mean_units=uniform_units, uniform=True, prefix_chunks=-1)
    return [chunk_document(document, config) for document in read_corpus(path)]


def eval_stage(
    model_dir: Path,
    output_dir: Path,
    config: EvalConfig,
    documents_path: Path | None = None,
    questions_path: Path | None = None,
    latent: bool = True,
    device: str = "auto",
    overwrite: bool | None = None,
    strict: bool = False,
) -> dict:
    """``bolt eval``: metrics to ``OUT/eval.json``, each generated answer to ``OUT/answers.jsonl``.

    ``overwrite``: replace an evaluation of another config (``bolt.core.rundir.RunDir.claim``); the
    benchmark results ``bolt eval --tasks`` put in ``OUT/tasks*`` are bolt's own. ``strict``: a quality
    warning (gold answers the pattern cannot match, mostly empty or unreadable answers) is an error.
    ``latent`` False (``--direct``) also takes a base model without the latent markers: its NLL and direct
    answers, the baseline."""
    if documents_path is None and questions_path is None:
        raise BoltError("nothing to evaluate: give held-out documents (positional) and/or --questions FILE.")
    config.validate()
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise BoltError(
            f"{output_dir}: is a file, where bolt needs a directory "
            "(-o of `bolt eval` names a directory); name another path."
        )
    resolve_device(device)
    check_model_dir(model_dir)  # one line for a missing, unfinished or damaged model, before any output is claimed
    stage_config = {
        "model": str(model_dir),
        "model_fingerprint": model_fingerprint(model_dir),
        "documents": str(documents_path),
        "questions": str(questions_path),
        "latent": latent,
        "eval": config,
    }

    def work(run) -> dict:
        documents = load_eval_documents(documents_path, config.uniform_units) if documents_path else None
        questions = read_questions(questions_path) if questions_path else None
        unmatchable = gold_answer_check(questions, config, strict) if questions else 0
        key = partial_key(stage_config, documents_path) if documents_path else ""
        results = evaluate_model(
            model_dir,
            documents,
            questions,
            config,
            latent=latent,
            partial_path=output_dir / "bounds.partial.jsonl",
            config_key=key,
            device=device,
            strict=strict,
        )
        if questions:
            results["unmatchable_gold_answers"] = unmatchable
        write_jsonl(output_dir / "answers.jsonl", results.pop("answers", []))
        write_json(output_dir / "eval.json", results)
        (output_dir / "bounds.partial.jsonl").unlink(missing_ok=True)
        return results

    inputs = {name: p for name, p in (("documents", documents_path), ("questions", questions_path)) if p}
    return run_stage(
        "eval",
        RunDir(output_dir),
        output_dir / "eval.json",
        stage_config,
        work,
        inputs=inputs,
        seed=config.seed,
        overwrite=overwrite,
        own=("tasks", "tasks.json"),
        extra_outputs=(output_dir / "answers.jsonl",),
    )
