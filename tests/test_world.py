"""The embedded world: text, oracle latents, the judge, and disjoint splits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bolt.apps.world.world import (
    REPHRASE_STYLES,
    OracleTeacher,
    Problem,
    WorldConfig,
    latent_is_correct,
    oracle_latent,
    parse_question,
    rephrase,
    world_documents,
    world_questions,
    write_world,
)
from bolt.core.records import read_documents
from bolt.errors import BoltError
from bolt.teachers import LatentRequest, make_teacher


def answer_requests(documents) -> list[LatentRequest]:
    """The teacher's requests for a world's answer chunks (chunks alternate question, answer)."""
    return [LatentRequest(d.id, i, c.prefix, c.text) for d in documents for i, c in enumerate(d.chunks) if i % 2]


def test_problem_evaluates_left_to_right_modulo():
    problem = Problem("x", (7, 5, 3, 4), ("+", "*", "-"), 10)
    assert problem.values() == [7, 2, 6, 2]
    assert problem.question() == "Let x = 7 + 5 * 3 - 4 (mod 10)."
    assert problem.answer_sentence() == "So x = 2."
    assert problem.derivation() == "7+5=2*3=6-4=2."
    assert parse_question(" " + problem.question()) == problem


def test_a_prime_modulus_world_has_two_digit_results_and_an_exact_judge():
    problem = Problem("y", (12, 9, 7), ("+", "*"), 13)
    assert problem.values() == [12, 8, 4]  # 12 + 9 = 21 = 8, 8 * 7 = 56 = 4 (mod 13)
    assert problem.question() == "Let y = 12 + 9 * 7 (mod 13)." and parse_question(problem.question()) == problem
    question, answer = problem.question(), " So y = 4."
    assert oracle_latent(question, answer) == "12+9=8*7=4."
    assert latent_is_correct(question, answer, "12+9=8*7=4.") is True
    assert latent_is_correct(question, answer, "12+9=21*7=4.") is False  # a step not reduced mod 13
    splits = world_documents(
        WorldConfig(modulus=13, warm_documents=10, bootstrap_documents=0, heldout_documents=0), seed=0
    )
    requests = answer_requests(splits["warm"])
    answers = [int(r.text.split("= ")[1].rstrip(".")) for r in requests]
    assert max(answers) >= 10 and all(0 <= a < 13 for a in answers)
    assert all(
        latent_is_correct(r.prefix, r.text, z) for r, z in zip(requests, make_teacher("oracle").write_latents(requests))
    )


def test_oracle_writes_the_derivation_only_for_answers():
    question, answer = "Let x = 7 + 5 * 3 - 4 (mod 10).", " So x = 2."
    assert oracle_latent("", question) == ""
    assert oracle_latent(question, answer) == "7+5=2*3=6-4=2."
    assert latent_is_correct(question, answer, "7+5=2*3=6-4=2.") is True
    assert latent_is_correct(question, answer, "7+5=2*3=6-4=3.") is False
    assert latent_is_correct("", question, "") is None


def test_rephrasing_says_the_same_results_in_each_style_and_adds_no_reasoning():
    text = "Let x = 7 + 5 * 3 - 4 (mod 10). So x = 2. Let b = 1 - 3 (mod 10). So b = 8."
    assert (
        rephrase(text, "qa")
        == "Q: What is x = 7 + 5 * 3 - 4 (mod 10)? A: x = 2. Q: What is b = 1 - 3 (mod 10)? A: b = 8."
    )
    assert rephrase(text, "simple") == "x is 7 + 5 * 3 - 4, mod 10. x is 2. b is 1 - 3, mod 10. b is 8."
    for style in REPHRASE_STYLES:
        said = rephrase(text, style)
        assert "7 + 5 * 3 - 4" in said and "1 - 3" in said and said != text
        assert "=2*" not in said and latent_is_correct("", said, "") is None  # no derivation
    with pytest.raises(BoltError, match="question/answer pairs"):
        rephrase("Let x = 7 + 5 (mod 10).", "qa")
    with pytest.raises(BoltError, match="unknown rephrasing style"):
        rephrase(text, "poem")
    # the teacher draws a style per document from its seed: deterministic, and every style is used
    styles = {OracleTeacher(seed=3).rephrase(f"doc-{i}", text)[1] for i in range(40)}
    assert styles == set(REPHRASE_STYLES)
    assert OracleTeacher(seed=3).rephrase("doc-1", text) == OracleTeacher(seed=3).rephrase("doc-1", text)


def test_documents_round_trip_and_chunk_one_sentence_each():
    splits = world_documents(
        WorldConfig(warm_documents=3, bootstrap_documents=2, heldout_documents=1, problems_per_document=4), seed=5
    )
    for document in splits["warm"]:
        assert len(document.chunks) == 8
        for index, chunk in enumerate(document.chunks):
            assert chunk.prefix == (document.chunks[index - 1].text if index else "")
            if index % 2:
                problem = parse_question(chunk.prefix)
                assert chunk.text == f" So {problem.variable} = {problem.answer}."


def test_splits_and_questions_are_disjoint_and_deterministic(tmp_path):
    config = WorldConfig(
        warm_documents=20, bootstrap_documents=20, heldout_documents=5, questions=100, steps=2, operators="+"
    )
    paths = write_world(tmp_path / "a", config, seed=1)
    keys = {}
    for name in ("warm", "bootstrap", "heldout"):
        keys[name] = {
            (p.operands, p.operators)
            for d in read_documents(paths[f"{name}_chunks"])
            for c in d.chunks
            if (p := parse_question(c.text))
        }
    assert (
        not keys["warm"] & keys["bootstrap"]
        and not keys["warm"] & keys["heldout"]
        and not keys["bootstrap"] & keys["heldout"]
    )
    questions = {
        (p.operands, p.operators)
        for q in world_questions(config, 1, [d for n in keys for d in read_documents(paths[f"{n}_chunks"])])
        if (p := parse_question(q["prompt"]))
    }
    assert len(questions) == 100 and not questions & (keys["warm"] | keys["bootstrap"] | keys["heldout"])
    again = write_world(tmp_path / "b", config, seed=1)
    assert paths["bootstrap_chunks"].read_text() == again["bootstrap_chunks"].read_text()
    heldout = read_documents(paths["heldout_chunks"])[0]
    assert heldout.chunks[-1].prefix == "".join(c.text for c in heldout.chunks[:-1])
    bootstrap = read_documents(paths["bootstrap_chunks"])[0]
    assert bootstrap.chunks[5].prefix == "".join(
        c.text for c in bootstrap.chunks[2:5]
    )  # the E-step's 3 sentences by default
    short = read_documents(
        write_world(tmp_path / "c", dataclasses.replace(config, estep_context=1), seed=1)["bootstrap_chunks"]
    )[0]
    assert [c.text for c in short.chunks] == [c.text for c in bootstrap.chunks] and short.chunks[
        5
    ].prefix == bootstrap.chunks[4].text


def test_imperfect_teacher_errs_at_its_rate():
    splits = world_documents(WorldConfig(warm_documents=100, bootstrap_documents=0, heldout_documents=0), seed=0)
    teacher = make_teacher("oracle", error_rate=0.3, seed=2)
    requests = answer_requests(splits["warm"])
    verdicts = [latent_is_correct(r.prefix, r.text, z) for r, z in zip(requests, teacher.write_latents(requests))]
    assert np.mean(verdicts) == pytest.approx(0.7, abs=0.05)


def test_world_config_validation():
    with pytest.raises(BoltError):
        WorldConfig(operators="/").validate()
    with pytest.raises(BoltError):
        WorldConfig(teacher_error_rate=2).validate()
    with pytest.raises(BoltError, match="distinct problems"):
        world_documents(WorldConfig(steps=1, modulus=2, operators="+", warm_documents=10), seed=0)


def test_wrap_cot_writes_each_derivation_inline_before_its_answer():
    from bolt.apps.world.world import with_reasoning

    text = "Let c = 3 + 8 - 5 * 2 (mod 10). So c = 2. Let p = 7 * 3 (mod 10). So p = 1."
    assert (
        with_reasoning(text)
        == "Let c = 3 + 8 - 5 * 2 (mod 10). 3+8=1-5=6*2=2. So c = 2. Let p = 7 * 3 (mod 10). 7*3=1. So p = 1."
    )
    teacher = OracleTeacher(seed=3)
    assert teacher.rephrase_with_reasoning("d", text) == with_reasoning(text)
    wrong = OracleTeacher(error_rate=1.0, seed=3).rephrase_with_reasoning("d", text)
    assert wrong != with_reasoning(text) and wrong.count(". So ") == 2, (
        "an imperfect teacher botches steps, never the stated answers"
    )
