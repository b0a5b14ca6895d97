"""Answer extraction and grading: a golden table of model outputs with the grade each must get."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("lm_eval", reason="the 'eval' extra is part of the 'test' extra: pip install -e '.[test]'")
pytest.importorskip("math_verify")

from bolt.core.special_tokens import EOL, SOL
from bolt.errors import BoltError
from bolt.evaluate.grading import after_latent, last_boxed, math_answer, math_equivalent
from bolt.evaluate.tasks import hooks

GSM8K_DOC = {"question": "q", "answer": "Work: 3 + 15 = <<3+15=18>>18.\n#### 1,018"}
MATH_DOC = {"problem": "p", "solution": "So it is $\\boxed{\\frac{3}{4}}$."}
MMLU_DOC = {"question": "q", "choices": ["w", "x", "y", "z"], "answer": 1}
WORLD_DOC = {"prompt": "Let c = 3 + 8 (mod 10).", "answer": "1"}

# (grader, doc, latent, response, expected metrics on that single sample)
GOLDEN = [
    # GSM8K, standard: strict wants "The answer is N", flexible takes the last number.
    (
        "gsm8k",
        GSM8K_DOC,
        False,
        " 3 + 15 = 18, plus 1000. The answer is 1,018.",
        {"exact_match": 1, "exact_match_flexible": 1},
    ),
    ("gsm8k", GSM8K_DOC, False, " The answer is 1018.", {"exact_match": 1, "exact_match_flexible": 1}),
    ("gsm8k", GSM8K_DOC, False, " It costs $1,018.", {"exact_match": 0, "exact_match_flexible": 1}),
    (
        "gsm8k",
        GSM8K_DOC,
        False,
        " The answer is 1,018 and then 17 more.",
        {"exact_match": 1, "exact_match_flexible": 0},
    ),
    ("gsm8k", GSM8K_DOC, False, " The answer is 1,017.", {"exact_match": 0, "exact_match_flexible": 0}),
    ("gsm8k", GSM8K_DOC, False, " I do not know.", {"exact_match": 0, "exact_match_flexible": 0}),
    # GSM8K, latent: only the text after EoL counts; no EoL is malformed.
    (
        "gsm8k",
        GSM8K_DOC,
        True,
        f" 3 + 15 = 18, plus 1000{EOL} The answer is 1018.",
        {"exact_match": 1, "exact_match_flexible": 1},
    ),
    (
        "gsm8k",
        GSM8K_DOC,
        True,
        " 3 + 15 = 18, plus 1000. The answer is 1018.",
        {"exact_match": 0, "exact_match_flexible": 0},
    ),
    (
        "gsm8k",
        GSM8K_DOC,
        True,
        f" The answer is 1018.{EOL} The answer is 17.",
        {"exact_match": 0, "exact_match_flexible": 0},
    ),
    (
        "gsm8k",
        GSM8K_DOC,
        True,
        f" thinking{EOL} The answer is 1018.{SOL} more",
        {"exact_match": 1, "exact_match_flexible": 1},
    ),
    # MATH: math-verify decides equality, so equivalent forms pass.
    ("math", MATH_DOC, False, " Add them. The final answer is $\\frac{3}{4}$.", {"exact_match": 1}),
    ("math", MATH_DOC, False, " Add them. The final answer is $0.75$.", {"exact_match": 1}),
    ("math", MATH_DOC, False, " Add them to get $\\boxed{6/8}$.", {"exact_match": 1}),
    ("math", MATH_DOC, False, " The final answer is $\\frac{4}{3}$.", {"exact_match": 0}),
    ("math", MATH_DOC, False, " The final answer is $\\frac{3}{$.", {"exact_match": 0}),
    ("math", MATH_DOC, False, " No idea.", {"exact_match": 0}),
    ("math", MATH_DOC, True, f" 1/2 + 1/4 = 3/4{EOL} The final answer is $0.75$.", {"exact_match": 1}),
    ("math", MATH_DOC, True, " 1/2 + 1/4. The final answer is $0.75$.", {"exact_match": 0}),
    # MMLU: strict "answer is (X)" (parentheses optional), flexible the last "(X)".
    ("mmlu", MMLU_DOC, False, " Since x fits, the answer is (B).", {"exact_match": 1, "exact_match_flexible": 1}),
    ("mmlu", MMLU_DOC, False, " The answer is B.", {"exact_match": 1, "exact_match_flexible": 0}),
    ("mmlu", MMLU_DOC, False, " Not (A), so (B).", {"exact_match": 0, "exact_match_flexible": 1}),
    ("mmlu", MMLU_DOC, False, " The answer is (C).", {"exact_match": 0, "exact_match_flexible": 0}),
    ("mmlu", MMLU_DOC, True, f" not (C){EOL} The answer is (B).", {"exact_match": 1, "exact_match_flexible": 1}),
    ("mmlu", MMLU_DOC, True, " The answer is (B).", {"exact_match": 0, "exact_match_flexible": 0}),
    ("mmlu", MMLU_DOC | {"answer": "B"}, False, " The answer is (B).", {"exact_match": 1, "exact_match_flexible": 1}),
    # The embedded world: the number an answer sentence states.
    ("world", WORLD_DOC, False, " So c = 1. Let", {"exact_match": 1}),
    ("world", WORLD_DOC, False, " So c = 11.", {"exact_match": 0}),
    ("world", WORLD_DOC, True, f"3+8=1.{EOL} So c = 1.", {"exact_match": 1}),
    ("world", WORLD_DOC, True, "3+8=1. So c = 1.", {"exact_match": 0}),
    ("world", WORLD_DOC, True, f"3+8=1.{EOL} So c = 2.", {"exact_match": 0}),
]
GRADERS = {
    ("gsm8k", False): hooks.gsm8k_results,
    ("gsm8k", True): hooks.gsm8k_results_latent,
    ("math", False): hooks.math_results,
    ("math", True): hooks.math_results_latent,
    ("mmlu", False): hooks.mmlu_results,
    ("mmlu", True): hooks.mmlu_results_latent,
    ("world", False): hooks.world_results,
    ("world", True): hooks.world_results_latent,
}


@pytest.mark.parametrize("family, doc, latent, response, expected", GOLDEN)
def test_golden_grades(family, doc, latent, response, expected):
    metrics = GRADERS[family, latent](doc, [[response]])  # the harness passes each request's list of samples
    assert {name: metrics[name] for name in expected} == expected
    assert metrics["pass_at_k"] == metrics["maj_at_k"]  # one sample: both are that sample's grade


@pytest.mark.parametrize(
    "answers, exact, majority, any_correct",
    [
        (["1018", "17", "1018"], 1, 1, 1),
        (["17", "1018", "17"], 0, 0, 1),
        (["17", "1018"], 0, 0, 1),  # a tie goes to the first answer seen
        (["17", "19", "16"], 0, 0, 0),
        (["1018", None, None], 1, 1, 1),  # malformed samples (no EoL) do not vote
    ],
)
def test_maj_and_pass_at_k(answers, exact, majority, any_correct):
    samples = [f" work{EOL} The answer is {a}." if a else " work, no end marker" for a in answers]
    metrics = hooks.gsm8k_results_latent(GSM8K_DOC, [samples])
    assert (metrics["exact_match"], metrics["maj_at_k"], metrics["pass_at_k"]) == (exact, majority, any_correct)


def test_extraction_helpers():
    assert after_latent(f"a{EOL} b{SOL}c") == " b" and after_latent("a b") is None
    assert (
        last_boxed("\\boxed{1} then \\boxed{\\frac{a}{b}} end") == "\\frac{a}{b}" and last_boxed("\\boxed{open") is None
    )
    assert math_answer("Work.\nThe final answer is $x+1$.") == "$x+1$"
    assert hooks.math_gold({"problem": "p", "answer": "7", "solution": "\\boxed{8}"}) == "7"
    assert [hooks.mmlu_gold({"question": "q", "answer": a}) for a in (0, "3", " c")] == ["A", "D", "C"]
    for bad in (-1, 4, "E", None):
        with pytest.raises(BoltError, match="must be 0-3 or A-D"):
            hooks.mmlu_gold({"question": "q", "answer": bad})


def test_math_verify_runs_past_its_timeout_and_is_graded_wrong():
    """(x+1)^2000 against its expansion keeps sympy busy for many seconds: our timeout stops it."""
    assert math_equivalent("1", "$1$", timeout=60.0) is True  # the helper's start-up is not part of what is timed
    started = time.monotonic()
    assert math_equivalent("x^{2000}+1", "$(x+1)^{2000}$", timeout=1.0) is None
    assert time.monotonic() - started < 5
    assert math_equivalent("\\frac{1}{2}", "$0.5$", timeout=5.0) is True  # the helper process was restarted
    doc = {"problem": "p", "solution": "$\\boxed{x^{2000}+1}$"}
    import os

    os.environ[hooks.MATH_TIMEOUT_ENV] = "1"
    try:
        assert hooks.math_results(doc, [[" The final answer is $(x+1)^{2000}$."]])["exact_match"] == 0
    finally:
        del os.environ[hooks.MATH_TIMEOUT_ENV]


def test_math_grading_works_outside_the_main_thread():
    """math-verify's own SIGALRM timeout raises in a worker thread; ours does not."""
    from math_verify import parse

    results = {}

    def grade():
        try:
            parse("$0.5$")
        except ValueError as exc:
            results["their_timeout"] = str(exc)
        results["ours"] = hooks.math_results(MATH_DOC, [[" The final answer is $0.75$."]])["exact_match"]

    thread = threading.Thread(target=grade)
    thread.start()
    thread.join()
    assert "thread" in results["their_timeout"]
    assert results["ours"] == 1


def test_math_grading_without_math_verify_says_how_to_install(monkeypatch):
    import importlib.util

    from bolt.evaluate.grading import MathVerifier

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "math_verify" else real_find_spec(name, *args)
    )
    with pytest.raises(BoltError, match=r"bolt-latent\[eval\]"):
        MathVerifier().equivalent("1", "$1$")
