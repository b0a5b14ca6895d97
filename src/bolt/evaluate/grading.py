"""Answer extraction and grading for the benchmark tasks (``bolt eval --tasks``).

- Latent answers: the model reasons inside ``SoL PRIOR ... EoL`` and states the answer
  after EoL; ``after_latent`` returns that tail (None when EoL never came: malformed).
- GSM8K: the harness's two extractions, strict ("The answer is N") and flexible (the
  last number), through lm-evaluation-harness's own regex filter; numbers compared after
  dropping commas, dollar signs and a trailing period, as the harness's GSM8K tasks do.
- MATH: math-verify decides whether two answers are mathematically equal. Its own
  timeouts use SIGALRM, which only works in the main thread, so they are switched off
  and every check runs in a helper process that is killed after ``timeout`` seconds
  (a timed-out answer is graded wrong).
- MMLU: the letter of the chosen option.
- Several samples per question: maj@k (the most common extracted answer is correct) and
  pass@k (any of the k is correct).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence

from bolt.core.special_tokens import EOL, SOL
from bolt.errors import BoltError

GSM8K_STRICT = r"The answer is (\-?[0-9\.\,]+)."
GSM8K_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
MMLU_STRICT = r"answer is \(?([A-D])\)?"
MMLU_FLEXIBLE = r"\(([A-D])\)"
FINAL_ANSWER = re.compile(r"final answer is (.+?)\s*$", re.IGNORECASE | re.MULTILINE)
INVALID = "[invalid]"


def after_latent(text: str) -> str | None:
    """The answer part of a latent-format generation: the text after the first EoL."""
    if EOL not in text:
        return None
    return text.split(EOL, 1)[1].split(SOL, 1)[0]


def regex_extract(text: str, pattern: str, group_select: int) -> str:
    """The harness's regex filter on one response (``[invalid]`` when nothing matches)."""
    from lm_eval.filters.extraction import RegexFilter

    return next(
        iter(RegexFilter(regex_pattern=pattern, group_select=group_select, fallback=INVALID).apply([[text]], [{}]))
    )[0]


def normalize_number(text: str) -> str:
    return re.sub(r"[,$]", "", text.strip()).rstrip(".").lower()


def gsm8k_strict(text: str) -> str:
    return regex_extract(text, GSM8K_STRICT, 0)


def gsm8k_flexible(text: str) -> str:
    return regex_extract(text, GSM8K_FLEXIBLE, -1)


def gsm8k_gold(answer: str) -> str:
    """The number after ``####`` in a GSM8K answer field."""
    return normalize_number(answer.split("####")[-1])


def numbers_equal(extracted: str, gold: str) -> bool:
    return extracted != INVALID and normalize_number(extracted) == normalize_number(gold)


def mmlu_letter(text: str, strict: bool = True) -> str:
    return regex_extract(text, MMLU_STRICT if strict else MMLU_FLEXIBLE, 0 if strict else -1)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    opening = text.find("{", start)
    if opening < 0:
        return None
    depth = 0
    for position in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[opening + 1 : position]
    return None


def math_answer(text: str) -> str | None:
    """The stated final answer of a MATH-style solution: "The final answer is X", else the last \\boxed{}."""
    found = FINAL_ANSWER.findall(text)
    if found:
        return found[-1].rstrip(".").strip()
    return last_boxed(text)


def _verify_in_worker(connection) -> None:
    from math_verify import parse, verify

    # warm-up: lazy imports and grammar
    verify(parse("$1$", parsing_timeout=None), parse("$1$", parsing_timeout=None), timeout_seconds=None)
    connection.send("ready")
    while True:
        gold, answer = connection.recv()
        try:
            parsed_gold = parse(_as_latex(gold), parsing_timeout=None)
            parsed_answer = parse(_as_latex(answer), parsing_timeout=None)
            connection.send(bool(verify(parsed_gold, parsed_answer, timeout_seconds=None)))
        except Exception:  # math-verify raises on some malformed LaTeX: that answer is wrong
            connection.send(False)


def _as_latex(answer: str) -> str:
    return answer if "$" in answer or "\\boxed" in answer else f"${answer}$"


class MathVerifier:
    """math-verify in a helper process, killed and restarted when a check takes too long."""

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self._lock = threading.Lock()
        self._process = None

    def _start(self) -> None:
        if importlib.util.find_spec("math_verify") is None:  # the helper would die on import, with no message here
            raise BoltError(
                "grading MATH answers needs math-verify: pip install 'bolt-latent[eval]' (it pins math-verify==0.9.0)."
            )
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["math_verify"])
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_verify_in_worker, args=(child,), daemon=True)
        self._process.start()
        # The timeout is for the check, not for starting the helper: wait until it is ready.
        if not self._connection.poll(300) or self._connection.recv() != "ready":
            self.close()
            raise RuntimeError("the math-verify helper process did not start")

    def equivalent(self, gold: str, answer: str | None) -> bool | None:
        """True/False, or None when the check ran past the timeout (grade it wrong)."""
        if answer is None or not answer.strip():
            return False
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._start()
            self._connection.send((gold, answer))
            if self._connection.poll(self.timeout):
                return self._connection.recv()
            self.close()
            return None

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join()
            self._process = None


_verifier: MathVerifier | None = None


def math_equivalent(gold: str, answer: str | None, timeout: float = 5.0) -> bool | None:
    """Shared helper process for the MATH tasks."""
    global _verifier
    if _verifier is None:
        _verifier = MathVerifier(timeout)
    _verifier.timeout = timeout
    return _verifier.equivalent(gold, answer)


def majority_correct(answers: Sequence[str | None], is_correct: Callable[[str], bool]) -> bool:
    """maj@k: the most common valid answer (first seen on ties) is correct."""
    valid = [a for a in answers if a is not None and a != INVALID]
    if not valid:
        return False
    return bool(is_correct(Counter(valid).most_common(1)[0][0]))


def sample_metrics(
    correct: Sequence[bool], answers: Sequence[str | None], is_correct: Callable[[str], bool]
) -> dict[str, float]:
    """First-sample accuracy, maj@k and pass@k over the k samples of one question."""
    return {"maj_at_k": float(majority_correct(answers, is_correct)), "pass_at_k": float(any(correct))}
