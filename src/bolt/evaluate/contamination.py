"""``bolt contamination``: n-gram overlap of a corpus and its latents with benchmark test sets.

Before a benchmark number is compared with a published one, the field checks that the
training data did not contain the test questions (GPT-3's and lm-eval's decontamination:
13-grams of normalised words). For latent thoughts this matters twice: a teacher that has seen
GSM8K can write a test solution into a latent, and an E-step can copy one.

Text on both sides is normalised alike (lower case, words of letters and digits, everything
else dropped) and cut into word n-grams (``n`` = 13 by default). A test document is
*contaminated* when any of its n-grams occurs in a training file, in a chunk's text or (with
``bolt.latents/1`` files) in a latent; a test document shorter than ``n`` words is checked
with its whole text as one n-gram. The report gives, per dataset, how many test documents
overlap and with which training files, and per training file how many of its documents (and
latents) hold an overlapping n-gram, with a few examples of each.

Test sets are read like ``bolt eval --tasks`` reads them: ``DIR/<dataset>/test.jsonl`` with
``--data-dir`` (the hub without it). The fields compared: GSM8K question and answer, MATH
problem and solution, MMLU question and choices.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bolt.core.progress import progress_bar
from bolt.core.records import atomic_path, is_chunked_file, iter_corpus, iter_documents, write_json
from bolt.core.rundir import RunDir
from bolt.errors import BoltError

DATASETS = ("gsm8k", "math", "mmlu_stem")
TEST_FIELDS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution"), "mmlu_stem": ("question", "choices")}
EXAMPLES = 5
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class ContaminationConfig:
    ngram: int = 13
    """Words per n-gram (13: GPT-3's and lm-eval's decontamination)."""
    datasets: list[str] = field(default_factory=lambda: list(DATASETS))
    data_dir: Path | None = None
    """DIR/<dataset>/test.jsonl; None: the Hugging Face hub (needs network)."""

    def validate(self) -> None:
        if self.ngram < 1:
            raise BoltError(f"--ngram must be at least 1, got {self.ngram}.")
        unknown = [d for d in self.datasets if d not in DATASETS]
        if unknown or not self.datasets:
            raise BoltError(f"--datasets takes some of {', '.join(DATASETS)}, got {', '.join(unknown) or 'none'}.")


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: punctuation, LaTeX markup and spacing do not hide an overlap."""
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = words(text)
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _test_text(dataset: str, row: dict) -> str:
    parts = []
    for name in TEST_FIELDS[dataset]:
        value = row.get(name)
        parts.extend(str(v) for v in value) if isinstance(value, (list, tuple)) else parts.append(str(value or ""))
    return "\n".join(parts)


def test_documents(dataset: str, data_dir: Path | None) -> list[tuple[str, str]]:
    """(id, text) of the dataset's test split, read as the benchmark tasks read it."""
    from bolt.evaluate.tasks import hooks

    splits = hooks.load(dataset, data_dir=str(data_dir) if data_dir else None)
    if "test" not in splits:
        raise BoltError(
            f"the {dataset} data has no test split to check against (--data-dir DIR with DIR/{dataset}/test.jsonl)."
        )
    return [
        (str(row.get("id", f"{dataset}-test-{i}")), _test_text(dataset, row)) for i, row in enumerate(splits["test"])
    ]


def _training_texts(path: Path) -> Iterator[tuple[str, str, str]]:
    """(document id, kind, text) of a training file: ``text`` of a plain corpus, or each chunk's text and latent."""
    if is_chunked_file(path):
        for document in iter_documents(path):
            yield document.id, "text", document.text
            for chunk in document.chunks:
                if chunk.latent:
                    yield document.id, "latent", chunk.latent
    else:
        for document in iter_corpus(path):
            yield document.id, "text", document.text


def _short_ngrams(index: dict[tuple[str, ...], set[str]], n: int) -> dict[int, set[tuple[str, ...]]]:
    """The indexed n-grams shorter than ``n`` (whole short test documents), by length."""
    short: dict[int, set[tuple[str, ...]]] = defaultdict(set)
    for gram in index:
        if len(gram) < n:
            short[len(gram)].add(gram)
    return short


def overlaps(
    text: str, index: dict[tuple[str, ...], set[str]], n: int, short: dict[int, set[tuple[str, ...]]]
) -> set[str]:
    """Keys of the test documents that share an n-gram with ``text`` (or whose whole short text it contains)."""
    tokens = words(text)
    hits: set[str] = set()
    for i in range(len(tokens) - n + 1):
        hits |= index.get(tuple(tokens[i : i + n]), set())
    for length, grams in short.items():
        for i in range(len(tokens) - length + 1):
            gram = tuple(tokens[i : i + length])
            if gram in grams:
                hits |= index[gram]
    return hits


def contamination(files: Iterable[Path], output: Path, config: ContaminationConfig) -> dict:
    """``bolt contamination``: ``OUT/contamination.json`` and ``OUT/contamination.md``."""
    config.validate()
    files = [Path(f) for f in files]
    for path in files:
        if not path.is_file():
            raise BoltError(f"{path}: no such file; give JSONL corpora or bolt.chunks/1 / bolt.latents/1 files.")
    run = RunDir(output)
    run.start(
        "contamination",
        {"files": [str(f) for f in files], "config": config},
        inputs={str(i): f for i, f in enumerate(files)},
    )
    index: dict[tuple[str, ...], set[str]] = defaultdict(set)
    tests: dict[str, list[str]] = {}
    for dataset in config.datasets:
        documents = test_documents(dataset, config.data_dir)
        tests[dataset] = [f"{dataset}:{doc_id}" for doc_id, _ in documents]
        for (_doc_id, text), key in zip(documents, tests[dataset]):
            for gram in ngrams(text, config.ngram):
                index[gram].add(key)
    short = _short_ngrams(index, config.ngram)
    hit_by: dict[str, set[str]] = defaultdict(set)  # test key -> training files
    per_file = {}
    for path in files:
        hit_documents: dict[str, set[str]] = {"text": set(), "latent": set()}
        seen, examples = set(), []
        with progress_bar(desc=f"contamination {path.name}", unit="doc", disable=None) as progress:
            for doc_id, kind, text in _training_texts(path):
                if doc_id not in seen:
                    seen.add(doc_id)
                    progress.update(1)
                found = overlaps(text, index, config.ngram, short)
                if found:
                    hit_documents[kind].add(doc_id)
                    for key in found:
                        hit_by[key].add(str(path))
                    if len(examples) < EXAMPLES:
                        examples.append({"document": doc_id, "in": kind, "test_documents": sorted(found)[:EXAMPLES]})
        per_file[str(path)] = {
            "documents": len(seen),
            "documents_overlapping": len(hit_documents["text"] | hit_documents["latent"]),
            "documents_with_an_overlapping_latent": len(hit_documents["latent"]),
            "examples": examples,
        }
        run.log_metrics(file=str(path), **{k: v for k, v in per_file[str(path)].items() if k != "examples"})
    per_dataset = {}
    for dataset, keys in tests.items():
        hit = [key for key in keys if key in hit_by]
        per_dataset[dataset] = {
            "test_documents": len(keys),
            "contaminated": len(hit),
            "share": len(hit) / max(1, len(keys)),
            "examples": [
                {"test_document": key.split(":", 1)[1], "files": sorted(hit_by[key])} for key in hit[:EXAMPLES]
            ],
        }
    result = {"ngram": config.ngram, "datasets": per_dataset, "files": per_file}
    write_json(output / "contamination.json", result)
    with atomic_path(output / "contamination.md") as temporary:
        temporary.write_text(markdown(result), encoding="utf-8")
    run.finish(**{f"{d}_contaminated": v["contaminated"] for d, v in per_dataset.items()})
    return result


def markdown(result: dict) -> str:
    n = result["ngram"]
    lines = [
        f"## Test documents sharing a {n}-gram with the training files",
        "",
        "| dataset | test documents | contaminated | share |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {d} | {v['test_documents']:,} | {v['contaminated']:,} | {v['share']:.2%} |"
        for d, v in result["datasets"].items()
    ]
    lines += [
        "",
        f"## Training documents holding a test {n}-gram",
        "",
        "| file | documents | overlapping | through a latent |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {f} | {v['documents']:,} | {v['documents_overlapping']:,} | {v['documents_with_an_overlapping_latent']:,} |"
        for f, v in result["files"].items()
    ]
    return "\n".join(lines) + "\n"
