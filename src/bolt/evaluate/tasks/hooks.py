"""The Python behind the world task YAMLs, and bolt's own GSM8K/MATH/MMLU formats and graders.

GSM8K, MATH and MMLU-STEM are evaluated as lm-eval's own tasks (``bolt.evaluate.tasks.upstream``,
which also formats ``bolt finetune-eval``'s training pairs); the ``gsm8k_*``, ``math_*`` and
``mmlu_*`` graders here (first sample, maj@k and pass@k over samples) are bolt's own; no task
uses them.

Every task comes in two variants. The standard one asks for a chain of thought in plain
text (``... The answer is N.``) with the latent markers banned from generation. The
latent one ends the prompt with ``SoL PRIOR``; its few-shot solutions carry the reasoning
inside ``SoL PRIOR ... EoL`` with the answer after EoL, and generation stops at the next
SoL. The YAMLs name these functions with ``!function bolt.evaluate.tasks.hooks.NAME``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bolt.core.special_tokens import EOL, PRIOR, SOL
from bolt.errors import BoltError
from bolt.evaluate.grading import (
    INVALID,
    after_latent,
    gsm8k_flexible,
    gsm8k_gold,
    gsm8k_strict,
    last_boxed,
    math_answer,
    math_equivalent,
    mmlu_letter,
    numbers_equal,
    sample_metrics,
)

DATA_DIR_ENV = "BOLT_EVAL_DATA_DIR"
"""Set by ``bolt eval --data-dir``: the tasks read
``$BOLT_EVAL_DATA_DIR/<dataset>/{train,test}.{jsonl,json,parquet}``."""
MATH_TIMEOUT_ENV = "BOLT_MATH_VERIFY_TIMEOUT"

HUB = {
    "gsm8k": ("openai/gsm8k", "main", {"train": "train", "test": "test"}),
    "math": ("DigitalLearningGmbH/MATH-lighteval", "default", {"train": "train", "test": "test"}),
    "mmlu_stem": ("cais/mmlu", "all", {"train": "dev", "test": "test"}),
}
"""Hub datasets used when no local directory is given (and the machine is online)."""

MMLU_STEM_SUBJECTS = frozenset(
    "abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science "
    "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
    "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
    "high_school_mathematics high_school_physics high_school_statistics machine_learning".split()
)
LATENT_OPEN = SOL + PRIOR
FIELDS = {
    "gsm8k": ("question", "answer"),
    "math": ("problem",),
    "mmlu_stem": ("question", "choices", "answer"),
    "world": ("prompt", "answer"),
}


# --- data ---------------------------------------------------------------------------


def _local_split(directory: Path, split: str) -> Path | None:
    for suffix in (".jsonl", ".json", ".parquet"):
        if (directory / f"{split}{suffix}").is_file():
            return directory / f"{split}{suffix}"
    return None


def _read_rows(path: Path, dataset: str) -> list[dict]:
    from bolt.core.records import _iter_rows

    rows = []
    for where, row in _iter_rows(path):
        missing = [name for name in FIELDS[dataset] if name not in row]
        if missing:
            raise BoltError(
                f"{where}: a {dataset} row needs the fields {', '.join(FIELDS[dataset])}; missing {', '.join(missing)}."
            )
        rows.append(row)
    return rows


def load(dataset: str, data_dir: str | None = None, **_: Any):
    """The task's ``custom_dataset``: local files when a data directory is set, else the hub (or the world's
    generator)."""
    import datasets

    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    directory = Path(data_dir) / dataset if data_dir else None
    if directory is not None and _local_split(directory, "test"):
        splits = {
            split: _read_rows(path, dataset) for split in ("train", "test") if (path := _local_split(directory, split))
        }
    elif dataset == "world":
        splits = {"test": _world_questions()}
    elif directory is not None:
        raise BoltError(
            f"{directory}: no test.jsonl (or test.json / test.parquet) for the {dataset} tasks. "
            "Put the dataset's test split there."
        )
    else:
        return _hub(dataset)
    if dataset == "mmlu_stem":
        splits = {name: _stem_only(rows) for name, rows in splits.items()}
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})


def _hub(dataset: str):
    import datasets

    path, name, splits = HUB.get(dataset, (None, None, None))
    if path is None:
        raise BoltError(
            f"the {dataset} tasks need local data: "
            f"--data-dir DIR with DIR/{dataset}/test.jsonl (the dataset is not redistributable)."
        )
    try:
        loaded = datasets.load_dataset(path, name)
    except Exception as exc:
        raise BoltError(
            f"cannot load {path} from the Hugging Face hub ({type(exc).__name__}). "
            f"Offline, pass --data-dir DIR with DIR/{dataset}/{{train,test}}.jsonl."
        ) from None
    result = datasets.DatasetDict({ours: loaded[theirs] for ours, theirs in splits.items() if theirs in loaded})
    return result.filter(lambda row: row["subject"] in MMLU_STEM_SUBJECTS) if dataset == "mmlu_stem" else result


def _stem_only(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row.get("subject", next(iter(MMLU_STEM_SUBJECTS))) in MMLU_STEM_SUBJECTS]


def _world_questions() -> list[dict]:
    """The embedded world's held-out questions for seed 0 (those of `bolt em`'s default run)."""
    from bolt.apps.world.config import WorldConfig
    from bolt.apps.world.world import world_documents, world_questions

    config = WorldConfig()
    splits = world_documents(config, 0)
    return world_questions(config, 0, [d for documents in splits.values() for d in documents])


def keep_all_samples(responses, docs):
    """Filter that keeps every sample of a question (the harness's default keeps the first)."""
    return responses


# --- prompts ------------------------------------------------------------------------


def _prompt(question: str, latent: bool) -> str:
    return question + (LATENT_OPEN if latent else "")


def math_gold(doc: dict) -> str:
    gold = doc.get("answer") or last_boxed(doc.get("solution", ""))
    if gold is None:
        raise BoltError(
            "a MATH problem has neither an 'answer' nor a \\boxed{} answer in its 'solution': "
            f"{doc['problem'][:60]!r}."
        )
    return str(gold)


def mmlu_gold(doc: dict) -> str:
    """The correct letter; ``answer`` is an index (the hub's format) or already a letter."""
    answer = doc["answer"]
    if isinstance(answer, str) and answer.strip().upper() in ("A", "B", "C", "D"):
        return answer.strip().upper()
    try:
        index = int(answer)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index <= 3:  # -1 would silently index "D"
        raise BoltError(
            f"an MMLU row's 'answer' must be 0-3 or A-D, got {answer!r} (question {doc['question'][:60]!r})."
        )
    return "ABCD"[index]


def world_text(doc: dict, latent: bool = False) -> str:
    return _prompt(doc["prompt"], latent)


def world_target(doc: dict, latent: bool = False) -> str:
    """The answer sentence, after the oracle's derivation in latent space for the latent variant."""
    from bolt.apps.world.world import parse_question

    problem = parse_question(doc["prompt"])
    if problem is None:
        raise BoltError(
            f"world question {doc.get('id', '?')}: {doc['prompt']!r} is not a 'Let x = ... (mod m).' question."
        )
    sentence = f" So {problem.variable} = {doc['answer']}."
    return f"{problem.derivation()}{EOL}{sentence}" if latent else sentence


# --- grading ------------------------------------------------------------------------


def grade_samples(
    responses: list[str],
    latent: bool,
    extractors: dict[str, Callable[[str], str | None]],
    is_correct: Callable[[str], bool],
    vote: str,
) -> dict[str, float]:
    """Each metric on the first sample, and maj@k / pass@k over all samples with the ``vote`` extraction.

    A latent-variant response without EoL is malformed: every extraction gives nothing.
    ``responses`` is what the harness passes: one entry per request, each the list of that
    request's samples (the ``keep_all_samples`` filter).
    """
    responses = [sample for entry in responses for sample in (entry if isinstance(entry, list) else [entry])]
    answers: dict[str, list[str | None]] = {name: [] for name in extractors}
    for response in responses:
        text = after_latent(response) if latent else response
        for name, extract in extractors.items():
            answers[name].append(None if text is None else extract(text))

    def correct(answer: str | None) -> bool:
        return answer is not None and answer != INVALID and bool(is_correct(answer))

    metrics = {name: float(correct(found[0])) for name, found in answers.items()}
    return metrics | sample_metrics([correct(a) for a in answers[vote]], answers[vote], is_correct)


def gsm8k_results(doc: dict, results: list[str], latent: bool = False) -> dict[str, float]:
    gold = gsm8k_gold(doc["answer"])
    extractors = {"exact_match": gsm8k_strict, "exact_match_flexible": gsm8k_flexible}
    return grade_samples(
        results, latent, extractors, lambda answer: numbers_equal(answer, gold), vote="exact_match_flexible"
    )


def math_results(doc: dict, results: list[str], latent: bool = False) -> dict[str, float]:
    gold = math_gold(doc)
    timeout = float(os.environ.get(MATH_TIMEOUT_ENV, "5"))
    return grade_samples(
        results,
        latent,
        {"exact_match": math_answer},
        lambda answer: bool(math_equivalent(gold, answer, timeout)),
        vote="exact_match",
    )


def mmlu_results(doc: dict, results: list[str], latent: bool = False) -> dict[str, float]:
    gold = mmlu_gold(doc)
    extractors = {"exact_match": mmlu_letter, "exact_match_flexible": partial(mmlu_letter, strict=False)}
    return grade_samples(results, latent, extractors, lambda answer: answer == gold, vote="exact_match_flexible")


def world_results(doc: dict, results: list[str], latent: bool = False) -> dict[str, float]:
    from bolt.apps.world.config import ANSWER_PATTERN
    from bolt.evaluate.stage import first_match_extractor

    gold = str(doc["answer"]).strip()
    return grade_samples(
        results,
        latent,
        {"exact_match": first_match_extractor(ANSWER_PATTERN)},
        lambda answer: answer == gold,
        vote="exact_match",
    )


gsm8k_results_latent = partial(gsm8k_results, latent=True)
math_results_latent = partial(math_results, latent=True)
mmlu_results_latent = partial(mmlu_results, latent=True)
world_text_latent = partial(world_text, latent=True)
world_target_latent = partial(world_target, latent=True)
world_results_latent = partial(world_results, latent=True)
