"""Quality checks that warn (``bolt: warning: ...``) or, with ``--strict``, fail the command.

Each check is cheap and reads only what a stage already has: a teacher's latents cut at the
token limit or repeating themselves, answers that are empty or that the answer pattern cannot
read, a warm-up longer than the training. The counts go into the stage's summary (and so its
manifest) whether or not anyone reads the warning.
"""

from __future__ import annotations

import re
import warnings

from bolt.errors import BoltError


def repetition_share(text: str, n: int = 4) -> float:
    """The share of the word ``n``-grams of ``text`` that repeat an earlier one (0: none, near 1: a loop)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def is_repetitive(text: str, n: int = 4, threshold: float = 0.5, min_grams: int = 8) -> bool:
    """A simple n-gram repetition test: at least ``min_grams`` word ``n``-grams, and half of them repeats.

    A loop such as "the sum is 4. the sum is 4. ..." fails it; ordinary prose, where a 4-word
    sequence rarely recurs, passes. Text in a script without spaces (one long "word") never fails it;
    its characters are tested instead when it has fewer than ``min_grams`` words."""
    words = text.split()
    if len(words) - n + 1 >= min_grams:
        return repetition_share(text, n) >= threshold
    chars = re.sub(r"\s+", "", text)
    if len(chars) >= 64:  # no word boundaries to speak of: character 12-grams
        grams = [chars[i : i + 12] for i in range(len(chars) - 11)]
        return 1.0 - len(set(grams)) / len(grams) >= threshold
    return False


def warn(message: str, strict: bool = False, fix: str = "") -> None:
    """Warn with ``message``; with ``strict`` raise it as an error (the fix says how to go on)."""
    if strict:
        raise BoltError(f"{message} (--strict makes this an error{'; ' + fix if fix else ''}).")
    warnings.warn(message, stacklevel=3)
