"""What every chat API backend shares: replies and their checks, retry timing, spend.

A backend (``openai_api``, ``anthropic_api``) renders a request body, sends it, and
turns the provider's answer into a ``Reply``; ``api_teacher`` does the rest. A reply
that is empty, cut at the token limit, refused or malformed is never used as a latent:
it is counted and asked again, up to a limit.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from bolt.errors import BoltError

OK = "ok"
PROBLEMS = ("empty", "truncated", "refused", "malformed")


@dataclass(frozen=True)
class Reply:
    """One provider answer: the text and why it is (not) usable."""

    text: str
    status: str = OK
    """``ok`` or one of ``PROBLEMS``."""
    input_tokens: int = 0
    output_tokens: int = 0


def checked_reply(text: str | None, truncated: bool, refused: bool, input_tokens: int, output_tokens: int) -> Reply:
    """The status of a reply from its text and the provider's stop reason."""
    status = "refused" if refused else "truncated" if truncated else "empty" if not (text or "").strip() else OK
    return Reply(text=(text or "").strip(), status=status, input_tokens=input_tokens, output_tokens=output_tokens)


class BatchRejected(BoltError):
    """The provider refused a whole batch (failed validation): re-submitting it would fail again."""


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters sent with every request (part of the cache key)."""

    max_tokens: int = 1024
    temperature: float = 0.0
    seed: int | None = None


class ChatBackend(Protocol):
    """One chat API, online and (optionally) batched."""

    family: str
    """Which request format (``openai``, ``anthropic``): part of the cache key."""
    model: str
    max_batch_requests: int
    max_batch_bytes: int

    def render(self, messages: list[dict[str, str]], sampling: Sampling) -> dict[str, Any]:
        """The request body for ``messages`` (JSON-serialisable)."""
        ...

    def send(self, body: dict[str, Any]) -> Reply:
        """One online request; raises the SDK's exception on a transport or HTTP error."""
        ...

    def transient(self, error: Exception) -> tuple[str | None, float | None]:
        """What kind of failure ``error`` is (``None``: one no retry can fix, such as a bad key), and
        the server's Retry-After in seconds if it gave one. ``REJECTED`` means the provider refused
        this one request (too long, invalid for its input): it is not retried, the others go on.
        ``UNREACHABLE`` means the request reached no server: a few in a row stop the run."""
        ...

    def submit_batch(self, items: list[tuple[str, dict[str, Any]]], submission: str) -> str:
        """Submit ``(custom_id, body)`` pairs as one provider batch tagged ``submission``; returns its id."""
        ...

    def find_batch(self, submission: str) -> str | None:
        """The id of the batch tagged ``submission``, if the provider has it (a kill came before its id was
        recorded)."""
        ...

    def batch_finished(self, batch_id: str) -> bool: ...

    def batch_results(self, batch_id: str) -> dict[str, Reply | str]:
        """Each custom_id's ``Reply``, or a string saying why it has none (error, expired, cancelled);
        raises ``BatchRejected`` if the provider refused the whole batch."""
        ...


REJECTED = "rejected"
"""Failure kind of one request the provider refused (HTTP 400, 413, 422)."""
UNREACHABLE = "unreachable"
"""Failure kind of a request that reached no server: connection refused, name not resolved, connect timeout."""
CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection (within the request timeout): a server that takes longer is down, and the
breaker counts it."""


def sdk_timeout(sdk: Any, timeout: float) -> Any:
    """The SDK's timeout: ``timeout`` seconds for a request, at most ``CONNECT_TIMEOUT`` of them to connect."""
    return sdk.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))


def connect_failure(error: BaseException) -> str | None:
    """What kept ``error``'s request from reaching any server (``connection refused``, ``name not
    resolved``, ``connect timed out``, ``could not connect``), or ``None`` if it got that far."""
    seen: set[int] = set()
    cause: BaseException | None = error
    found = None
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "name not resolved"
        name = type(cause).__name__
        if name == "ConnectTimeout":  # httpx's (and httpcore's): no connection within the timeout
            return "connect timed out"
        if name == "ConnectError":  # httpx's: the connection failed; its cause, if any, says why
            found = "could not connect"
        cause = cause.__cause__ or cause.__context__
    return found


def sdk_error_kind(sdk: Any, error: Exception) -> tuple[str | None, float | None]:
    """``ChatBackend.transient`` for the ``openai`` and ``anthropic`` SDKs, whose exception classes share names."""
    if isinstance(error, (sdk.APIResponseValidationError, json.JSONDecodeError)):
        return "malformed", None
    if isinstance(error, sdk.APIConnectionError) and connect_failure(error):
        return UNREACHABLE, None
    if isinstance(error, sdk.APITimeoutError):
        return "timeout", None
    if isinstance(error, sdk.APIConnectionError):
        return "connection", None
    if isinstance(error, sdk.APIStatusError):
        if error.status_code in (408, 409, 429) or error.status_code >= 500:
            kind = "rate_limited" if error.status_code == 429 else f"http_{error.status_code}"
            return kind, parse_retry_after(error.response.headers)
        if error.status_code in (400, 413, 422):
            return REJECTED, None
    return None, None


def request_key(family: str, body: dict[str, Any], template_version: str) -> str:
    """The cache key: a hash of the full rendered request and the template version."""
    payload = json.dumps(
        {"family": family, "body": body, "template": template_version}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def backoff_seconds(attempt: int, base: float, cap: float, retry_after: float | None, rng: random.Random) -> float:
    """Wait before retry ``attempt`` (0-based): the server's Retry-After when given, else
    exponential backoff with full jitter (uniform in [0, min(cap, base * 2**attempt)])."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    return rng.uniform(0.0, min(cap, base * 2**attempt))


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from a ``retry-after-ms`` or ``retry-after`` (seconds) header, if present."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) / scale
            except ValueError:
                continue
    return None


@dataclass
class Spend:
    """Requests, tokens and problems of one backend in one run (thread-safe)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached: int = 0
    problems: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_reply(self, reply: Reply) -> None:
        with self.lock:
            self.requests += 1
            self.input_tokens += reply.input_tokens
            self.output_tokens += reply.output_tokens
            if reply.status != OK:
                self.problems[reply.status] += 1

    def add_error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_answers": self.cached,
            "bad_replies": dict(self.problems),
            "errors": dict(self.errors),
        }

    @classmethod
    def total(cls, parts: list[dict[str, Any]]) -> Spend:
        """The sum of several ``to_json`` records (the shards of one run)."""
        spend = cls()
        for part in parts:
            spend.requests += part["requests"]
            spend.input_tokens += part["input_tokens"]
            spend.output_tokens += part["output_tokens"]
            spend.cached += part["cached_answers"]
            spend.problems.update(part["bad_replies"])
            spend.errors.update(part["errors"])
        return spend
