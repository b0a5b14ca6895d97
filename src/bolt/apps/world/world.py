"""The embedded world: terse arithmetic text whose reasoning is left out, with an oracle.

A document is a run of problems; each problem is two sentences::

    Let c = 3 + 8 - 5 * 2 (mod 10).   So c = 2.

Expressions are evaluated left to right modulo ``modulus``. The text states the result
and never the work. The oracle teacher writes the missing work as the latent of the
answer sentence, given the question in its prefix, as one chain of running results::

    3+8=1-5=6*2=2.

and an empty latent for a question sentence (nothing is missing there). Every single
step is one of a few hundred small facts seen many times, while the composed result of
``steps`` operations is hard to learn from the raw text alone: the gap the paper's claims
need. With ``error_rate`` > 0 the oracle is an imperfect teacher (one step goes wrong and
the error propagates).

Why a chain: a step of the chain takes 4 characters (``-5=6``), as a step of the spaced
question does (`` - 5``), so the operator and operand a step needs sit at a constant
distance back in the question, and the arithmetic reads the three characters just before
``=``. It is also short, and the answer after it only has to repeat the chain's last
number.

Documents are chunked one sentence per chunk, so the latent of an answer sees its
question in the prefix, as a few-shot prompt would show it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bolt.apps.world.config import ANSWER_PATTERN, WorldConfig
from bolt.core.chunking import with_new_prefixes, with_prefixes
from bolt.core.records import Document, write_jsonl
from bolt.errors import BoltError
from bolt.estep.stage import chunk_seed
from bolt.teachers.base import LatentRequest

if TYPE_CHECKING:
    from bolt.em.config import EMConfig

_OPS = {"+": lambda a, b, m: (a + b) % m, "-": lambda a, b, m: (a - b) % m, "*": lambda a, b, m: (a * b) % m}
_VARIABLES = "abcdefghkmnpqrstuvwxyz"
_QUESTION = re.compile(r"Let (\w) = ([0-9+\-* ]+) \(mod (\d+)\)\.")
_ANSWER = re.compile(r"So (\w) = (\d+)\.")
"""Extracts the number an answer sentence states (``So c = 2.`` -> ``2``), for ``bolt eval --answer-pattern``."""


@dataclass(frozen=True)
class Problem:
    variable: str
    operands: tuple[int, ...]
    operators: tuple[str, ...]
    modulus: int

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def values(self) -> list[int]:
        """The running value after each step (the first operand, then one per operator)."""
        value, values = self.operands[0], [self.operands[0]]
        for op, operand in zip(self.operators, self.operands[1:]):
            value = _OPS[op](value, operand, self.modulus)
            values.append(value)
        return values

    def expression(self) -> str:
        """``3 + 8 - 5 * 2``: the operands and operators, spaced as the question writes them."""
        return " ".join([str(self.operands[0])] + [f"{op} {x}" for op, x in zip(self.operators, self.operands[1:])])

    def question(self) -> str:
        return f"Let {self.variable} = {self.expression()} (mod {self.modulus})."

    def answer_sentence(self) -> str:
        return f"So {self.variable} = {self.answer}."

    def derivation(self, wrong_step: int | None = None, rng: np.random.Generator | None = None) -> str:
        """The chain ``7+5=2*3=6-4=2.``; with ``wrong_step``, that step's result is off (and the error carries on)."""
        left = self.operands[0]
        chain = [str(left)]
        for index, (op, operand) in enumerate(zip(self.operators, self.operands[1:])):
            left = _OPS[op](left, operand, self.modulus)
            if index == wrong_step:
                left = (left + int(rng.integers(1, self.modulus))) % self.modulus
            chain.append(f"{op}{operand}={left}")
        return "".join(chain) + "."


def random_problem(rng: np.random.Generator, config: WorldConfig) -> Problem:
    operands = tuple(int(x) for x in rng.integers(0, config.modulus, size=config.steps + 1))
    operators = tuple(config.operators[int(i)] for i in rng.integers(0, len(config.operators), size=config.steps))
    return Problem(_VARIABLES[int(rng.integers(0, len(_VARIABLES)))], operands, operators, config.modulus)


def parse_question(text: str) -> Problem | None:
    found = _QUESTION.search(text)
    if not found:
        return None
    tokens = found[2].split()
    operands = tuple(int(x) for x in tokens[0::2])
    return Problem(found[1], operands, tuple(tokens[1::2]), int(found[3]))


def document_text(problems: list[Problem]) -> list[str]:
    """Sentences of a document; a space opens each sentence after the first."""
    sentences = [sentence for p in problems for sentence in (p.question(), p.answer_sentence())]
    return sentences[:1] + [" " + sentence for sentence in sentences[1:]]


def world_documents(config: WorldConfig, seed: int) -> dict[str, list[Document]]:
    """Disjoint splits: no problem (operands and operators) appears in two splits or twice in a split."""
    config.validate()
    rng = np.random.default_rng([seed, 7])
    seen: set[tuple] = set()
    splits: dict[str, list[Document]] = {}
    for name, count in (
        ("warm", config.warm_documents),
        ("bootstrap", config.bootstrap_documents),
        ("heldout", config.heldout_documents),
    ):
        documents = []
        for index in range(count):
            problems = [_fresh_problem(rng, config, seen) for _ in range(config.problems_per_document)]
            documents.append(
                Document(id=f"world-{seed}-{name}-{index}", chunks=with_prefixes(document_text(problems), 1))
            )
        splits[name] = documents
    return splits


def _fresh_problem(rng: np.random.Generator, config: WorldConfig, seen: set[tuple]) -> Problem:
    for _ in range(1000):
        problem = random_problem(rng, config)
        key = (problem.operands, problem.operators)
        if key not in seen:
            seen.add(key)
            return problem
    raise BoltError("world: ran out of distinct problems; raise steps or modulus, or ask for fewer documents.")


def world_questions(config: WorldConfig, seed: int, exclude: list[Document]) -> list[dict[str, Any]]:
    """Held-out questions, none of which appears in ``exclude``'s documents."""
    seen = {(p.operands, p.operators) for d in exclude for c in d.chunks if (p := parse_question(c.text))}
    rng = np.random.default_rng([seed, 11])
    questions = []
    for index in range(config.questions):
        problem = _fresh_problem(rng, config, seen)
        questions.append({"id": f"world-{seed}-q{index}", "prompt": problem.question(), "answer": str(problem.answer)})
    return questions


def _derivations(
    prefix: str, text: str, wrong: set[int] | None = None, rng: np.random.Generator | None = None
) -> list[str]:
    """The derivation of every answer sentence in ``text``, each from the last question before it."""
    context = prefix + text
    questions = list(_QUESTION.finditer(context))
    derivations = []
    for index, answer in enumerate(_ANSWER.finditer(text)):
        position = len(prefix) + answer.start()
        before = [q for q in questions if q.end() <= position]
        problem = parse_question(before[-1].group(0)) if before else None
        if problem is not None:
            wrong_step = int(rng.integers(0, len(problem.operators))) if wrong and index in wrong else None
            derivations.append(problem.derivation(wrong_step, rng))
    return derivations


def oracle_latent(prefix: str, text: str, error_rate: float = 0.0, rng: np.random.Generator | None = None) -> str:
    """The true work behind a chunk: the derivation of each answer it states ("" if none)."""
    answers = len(_ANSWER.findall(text))
    wrong = {i for i in range(answers) if error_rate > 0 and rng is not None and rng.random() < error_rate}
    return " ".join(_derivations(prefix, text, wrong, rng))


def latent_is_correct(prefix: str, text: str, latent: str) -> bool | None:
    """Whether a latent holds exactly the correct derivations of the chunk's answers; None for chunks without one."""
    truth = oracle_latent(prefix, text)
    return None if not truth else latent.strip() == truth


REPHRASE_STYLES = ("qa", "scholarly", "simple", "wikipedia")
"""The four styles of the oracle's WRAP-like rephrasing (those of the paper's WRAP baseline)."""


def _rephrase_problem(problem: Problem, stated: str, style: str) -> str:
    expression, v, m = problem.expression(), problem.variable, problem.modulus
    if style == "simple":
        return f"{v} is {expression}, mod {m}. {v} is {stated}."
    if style == "scholarly":
        return f"Consider {v} = {expression} (mod {m}). It follows that {v} = {stated}."
    if style == "wikipedia":
        return f"With modulus {m}, the value {v} = {expression} is {stated}."
    if style == "qa":
        return f"Q: What is {v} = {expression} (mod {m})? A: {v} = {stated}."
    raise BoltError(f"unknown rephrasing style {style!r}; choose from {', '.join(REPHRASE_STYLES)}.")


def rephrase(text: str, style: str) -> str:
    """A document said again in ``style``: the same questions and the same stated results,
    with no reasoning added (the WRAP-like baseline; the latent thoughts stay left out).

    Every question must be followed by its answer sentence, as in the world's documents.
    """
    questions, answers = list(_QUESTION.finditer(text)), list(_ANSWER.finditer(text))
    if not questions or len(questions) != len(answers):
        raise BoltError(
            f"rephrase: expected question/answer pairs of the embedded world, found {len(questions)} questions "
            f"and {len(answers)} answers in {text[:80]!r}."
        )
    problems = [parse_question(q.group(0)) for q in questions]
    return " ".join(_rephrase_problem(p, a[2], style) for p, a in zip(problems, answers))


def with_reasoning(text: str, error_rate: float = 0.0, rng: np.random.Generator | None = None) -> str:
    """The WRAP-CoT rephrasing: the document with the work behind every stated result written
    inline as plain text, before the answer sentence (``Let c = 3 + 8 - 5 * 2 (mod 10).
    3+8=1-5=6*2=2. So c = 2.``). A model trained on it can show its work before answering
    without any latent markers, so it is the raw-text baseline that reasons."""
    pieces, last = [], 0
    for answer in _ANSWER.finditer(text):
        questions = list(_QUESTION.finditer(text, 0, answer.start()))
        if not questions:
            raise BoltError(f"with_reasoning: an answer sentence without a question before it in {text[:80]!r}.")
        derivation = oracle_latent(questions[-1].group(0), answer.group(0), error_rate, rng)
        pieces.append(text[last : answer.start()] + derivation + " ")
        last = answer.start()
    return "".join(pieces) + text[last:]


class OracleTeacher:
    """``--teacher oracle``: the world's true latents, optionally with errors."""

    name = "oracle"
    allows_empty_latents = True  # a question sentence leaves nothing out

    def __init__(self, error_rate: float = 0.0, seed: int = 0, **_: Any):
        self.error_rate = error_rate
        self.seed = seed

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "template": "world-oracle-v1", "error_rate": self.error_rate, "seed": self.seed}

    def rephrase(self, document_id: str, text: str) -> tuple[str, str]:
        """The document rephrased in a style drawn from the seed and its id: (text, style)."""
        from bolt.teachers.synthesize import wrap_style

        style = wrap_style(list(REPHRASE_STYLES), self.seed, document_id)
        return rephrase(text, style), style

    def rephrase_with_reasoning(self, document_id: str, text: str) -> str:
        """The document with its derivations written inline (``with_reasoning``), errors drawn like the latents'."""
        return with_reasoning(
            text, self.error_rate, np.random.default_rng(chunk_seed(self.seed, document_id + "\0wrap-cot", 0))
        )

    def write_latents(self, requests: list[LatentRequest]) -> list[str]:
        latents = []
        for request in requests:
            rng = np.random.default_rng(chunk_seed(self.seed, request.document_id, request.chunk_index))
            latents.append(oracle_latent(request.prefix, request.text, self.error_rate, rng))
        return latents


def write_world(directory: Path, config: WorldConfig, seed: int) -> dict[str, Path]:
    """The world's files.

    - ``{warm,bootstrap,heldout}.jsonl``: raw corpora (``text``), for ``bolt chunk``;
    - ``warm.chunks.jsonl`` (prefix: 1 chunk, for the teacher), ``bootstrap.chunks.jsonl``
      (``estep_context`` chunks, 3 by default, for the E-step) and ``heldout.chunks.jsonl`` (all previous text, for the
      bounds): one sentence per chunk;
    - ``questions.jsonl``: held-out ``prompt``/``answer`` pairs.
    """
    splits = world_documents(config, seed)
    paths: dict[str, Path] = {}
    for name, prefix_chunks in (("warm", 1), ("bootstrap", config.estep_context), ("heldout", -1)):
        documents = splits[name]
        paths[name] = directory / f"{name}.jsonl"
        write_jsonl(paths[name], [{"id": d.id, "text": d.text} for d in documents])
        paths[f"{name}_chunks"] = directory / f"{name}.chunks.jsonl"
        write_jsonl(paths[f"{name}_chunks"], [with_new_prefixes(d, prefix_chunks) for d in documents])
    paths["questions"] = directory / "questions.jsonl"
    write_jsonl(paths["questions"], world_questions(config, seed, [d for docs in splits.values() for d in docs]))
    return paths


def write_world_with_latents(directory: Path, world: WorldConfig, seed: int) -> dict[str, Path]:
    """The embedded world's files (``write_world``) and the oracle's warm-start latents as ``warm_latents``."""
    from bolt.teachers.synthesize import SynthesizeConfig, synthesize_stage

    data = write_world(directory, world, seed)
    data["warm_latents"] = directory / "warm.latents.jsonl"
    synthesize_stage(
        OracleTeacher(error_rate=world.teacher_error_rate, seed=seed),
        data["warm_chunks"],
        data["warm_latents"],
        SynthesizeConfig(batch_size=256),
    )
    return data


def em_inputs(config: EMConfig, data: Path) -> EMConfig:
    """``bolt em`` on the world (``run_em``'s ``prepare_inputs``): its files and the oracle's warm-start
    latents in ``data``, and the config that names them; answers are read as the world states them."""
    from bolt.evaluate.config import DEFAULT_ANSWER_PATTERN

    paths = write_world_with_latents(data, config.world, config.seed)
    return dataclasses.replace(
        config,
        warm_start=str(paths["warm_latents"]),
        bootstrap=str(paths["bootstrap_chunks"]),
        heldout=str(paths["heldout_chunks"]),
        questions=str(paths["questions"]),
        # the world states its answers in sentences; a pattern given with --answer-pattern is kept
        eval=dataclasses.replace(
            config.eval,
            answer_pattern=ANSWER_PATTERN
            if config.eval.answer_pattern == DEFAULT_ANSWER_PATTERN
            else config.eval.answer_pattern,
        ),
    )
