"""A small generated math corpus with an oracle teacher: the embedded default data.

Documents state arithmetic results without the work behind them ("The product of 23
and 7 is 161."); the oracle teacher (``--teacher toy``) writes that work for a chunk
("23*7 = 20*7 + 3*7 = 140 + 21 = 161."), reading it back from the chunk's sentences.
Everything is deterministic by seed, so the quick start needs no download.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from bolt.records import CorpusDocument, write_jsonl
from bolt.teachers.base import LatentRequest

_PRODUCT = re.compile(r"The product of (\d+) and (\d+) is (-?\d+)\.")
_SUM = re.compile(r"Adding (\d+), (\d+) and (\d+) gives (-?\d+)\.")


def product_thought(a: int, b: int) -> str:
    tens, ones = divmod(a, 10)
    if tens == 0:
        return f"{a}*{b} = {a * b}."
    return f"{a}*{b} = {tens * 10}*{b} + {ones}*{b} = {tens * 10 * b} + {ones * b} = {a * b}."


def sum_thought(a: int, b: int, c: int) -> str:
    return f"{a}+{b} = {a + b}, {a + b}+{c} = {a + b + c}."


def _fact(rng: np.random.Generator) -> tuple[str, str, str]:
    """(sentence, question prompt, answer) for one random fact."""
    if rng.random() < 0.5:
        a, b = int(rng.integers(11, 99)), int(rng.integers(2, 9))
        return f"The product of {a} and {b} is {a * b}.", f"The product of {a} and {b} is", str(a * b)
    a, b, c = (int(x) for x in rng.integers(2, 60, size=3))
    return f"Adding {a}, {b} and {c} gives {a + b + c}.", f"Adding {a}, {b} and {c} gives", str(a + b + c)


def toy_corpus(n_documents: int, seed: int, facts_per_document: int = 12) -> list[CorpusDocument]:
    rng = np.random.default_rng([seed, 1])
    documents = []
    for index in range(n_documents):
        sentences = [_fact(rng)[0] for _ in range(facts_per_document)]
        documents.append(CorpusDocument(id=f"toy-{seed}-{index}", text=" ".join(sentences)))
    return documents


def toy_questions(n_questions: int, seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng([seed, 2])
    return [{"id": f"q-{seed}-{i}", "prompt": prompt, "answer": answer} for i, (_, prompt, answer) in enumerate(_fact(rng) for _ in range(n_questions))]


def oracle_thought(text: str) -> str:
    thoughts = [product_thought(int(m[1]), int(m[2])) for m in _PRODUCT.finditer(text)]
    thoughts += [sum_thought(int(m[1]), int(m[2]), int(m[3])) for m in _SUM.finditer(text)]
    # Keep the order in which the facts appear in the chunk.
    positions = [m.start() for m in _PRODUCT.finditer(text)] + [m.start() for m in _SUM.finditer(text)]
    return " ".join(thought for _, thought in sorted(zip(positions, thoughts)))


class ToyTeacher:
    """The oracle for the toy corpus: writes the true derivations of a chunk's facts."""

    name = "toy"

    def __init__(self, **_: Any):
        pass

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "template": "toy-oracle-v1"}

    def write_latents(self, requests: list[LatentRequest]) -> list[str]:
        return [oracle_thought(request.text) for request in requests]


def write_toy_data(directory: Path, seed: int, warm_documents: int, bootstrap_documents: int, heldout_documents: int, questions: int) -> dict[str, Path]:
    """Disjoint warm-start, bootstrap and held-out corpora, plus held-out questions."""
    paths = {name: directory / f"{name}.jsonl" for name in ("warm", "bootstrap", "heldout", "questions")}
    corpus = toy_corpus(warm_documents + bootstrap_documents + heldout_documents, seed)
    splits = {
        "warm": corpus[:warm_documents],
        "bootstrap": corpus[warm_documents : warm_documents + bootstrap_documents],
        "heldout": corpus[warm_documents + bootstrap_documents :],
    }
    for name, documents in splits.items():
        write_jsonl(paths[name], [{"id": d.id, "text": d.text} for d in documents])
    write_jsonl(paths["questions"], toy_questions(questions, seed + 1000))
    return paths
