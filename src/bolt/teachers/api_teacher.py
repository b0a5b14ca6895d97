"""Teachers behind a chat API (``--teacher openai`` / ``anthropic``): cache, retries, batches, spend.

``ApiTeacher.complete`` answers a list of prompts. It first looks every rendered request
up in the SQLite cache (``cache``), then asks for the rest either online, with at most
``concurrency`` requests in flight, or through the provider's batch API. Transport
errors (429, 5xx, timeouts, malformed JSON) are retried with backoff; a request the
provider refuses (HTTP 400/413/422, e.g. over the context length) is not retried and the
others go on; replies that are empty, truncated, refused or malformed are asked again up
to ``max_bad_replies`` times;
what still has no answer is returned as ``None`` with the reason, never as a latent.

Requests that reach no server at all (connection refused, name not resolved, connect
timeout) trip a circuit breaker instead of the backoff: ``unreachable_limit`` of them in a
row, with no server ever heard from this run, stop the run within seconds with one line
naming the URL (an ``EnvironmentFault``, exit 1); after the server has answered, such a
streak stops it once it has lasted ``outage_seconds``. Answers already received stay in the
cache, so the same command resumes. 429 and 5xx keep their backoff.

The API key is read from the environment or a ``.env`` file and handed to the SDK
only: it is in no config, manifest, cache row or log line. A server may still quote it
back (or ``--base-url`` may hold credentials): every reason, message and URL that leaves
this module passes through ``bolt.core.scrub``, which knows the key (``register``).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bolt.core.progress import progress_bar
from bolt.core.scrub import register, scrub, scrub_url, url_secrets
from bolt.errors import BoltError, EnvironmentFault
from bolt.teachers.cache import TeacherCache
from bolt.teachers.chat import (
    OK,
    REJECTED,
    UNREACHABLE,
    BatchRejected,
    ChatBackend,
    Reply,
    Sampling,
    Spend,
    backoff_seconds,
    connect_failure,
    request_key,
)
from bolt.teachers.pricing import Price, estimate_tokens

KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass
class ApiConfig:
    """How requests are sent to a chat API."""

    batch: bool = False
    """Use the provider's batch API: half price, results within 24 h; a rerun picks up submitted batches."""
    concurrency: int = 8
    """Online requests in flight at once."""
    max_retries: int = 8
    """Retries of a request after 429, 5xx, timeouts or malformed JSON."""
    max_bad_replies: int = 2
    """Re-asks after an empty, truncated, refused or malformed reply."""
    backoff_base: float = 1.0
    """Seconds of the first retry wait, doubled per retry, with jitter; Retry-After wins."""
    backoff_max: float = 60.0
    """Longest wait between retries, Retry-After included."""
    timeout: float = 120.0
    """Seconds before an online request times out."""
    poll_interval: float = 30.0
    """Seconds between looks at unfinished batches."""
    unreachable_limit: int = 3
    """Requests in a row that reach no server (refused, name not resolved, connect timeout) before the run
    stops, if no server answered yet."""
    outage_seconds: float = 120.0
    """How long such a streak may last once a server has answered, before the run stops (rerun to resume)."""
    max_spend: float | None = None
    """USD this run may spend at most (None: no cap). A request is sent only while what was spent,
    plus the worst case of every request in flight (its input and ``max_tokens`` of output), plus its
    own worst case stay within it; answers already cached cost nothing and are not counted."""

    def validate(self) -> None:
        if self.concurrency < 1:
            raise BoltError(f"--concurrency must be at least 1, got {self.concurrency}.")
        if self.max_retries < 0 or self.max_bad_replies < 0:
            raise BoltError("--max-retries and --max-bad-replies must be at least 0.")
        if self.timeout <= 0 or self.poll_interval < 0 or self.backoff_base < 0:
            raise BoltError("--request-timeout must be positive, and backoff and poll intervals not negative.")
        if self.unreachable_limit < 1 or self.outage_seconds < 0:
            raise BoltError("unreachable_limit must be at least 1 and outage_seconds not negative.")
        if self.max_spend is not None and not self.max_spend > 0:
            raise BoltError(f"--max-spend must be a positive amount of USD, got {self.max_spend}.")


@dataclass(frozen=True)
class Prompt:
    """Chat messages to answer, and the version of the template that wrote them."""

    messages: list[dict[str, str]]
    template_version: str


def api_key(variable: str, env_file: str | Path | None) -> str | None:
    """The key in environment variable ``variable``, else in ``env_file`` (never copied into ``os.environ``)."""
    if os.environ.get(variable):
        return os.environ[variable]
    if env_file is None:
        return None
    path = Path(env_file)
    if not path.is_file():
        raise BoltError(f"{path}: no such .env file. Pass the file that sets {variable}=..., or export {variable}.")
    from dotenv import dotenv_values

    return dotenv_values(path).get(variable) or None


def make_backend(
    family: str, model: str, base_url: str | None, env_file: str | Path | None, timeout: float, require_key: bool = True
) -> ChatBackend:
    variable = KEY_VARIABLES[family]
    key = api_key(variable, env_file)
    if key is None:
        if (family == "openai" and base_url) or not require_key:
            key = "none"  # local OpenAI-compatible servers (vLLM, SGLang) accept any key; a dry run sends nothing
        else:
            raise BoltError(
                f"--teacher {family} needs an API key: "
                f"export {variable}=... or pass --env-file FILE with a {variable}= line."
            )
    # from now on bolt.core.scrub removes them from whatever is written or printed
    register(key, *url_secrets(base_url))
    if family == "openai":
        from bolt.teachers.openai_api import OpenAIBackend

        return OpenAIBackend(model, key, base_url, timeout)
    from bolt.teachers.anthropic_api import AnthropicBackend

    return AnthropicBackend(model, key, base_url, timeout)


class ApiTeacher:
    """Answers prompts through one chat backend, with a cache, retries and spend tracking."""

    def __init__(
        self,
        backend: ChatBackend,
        sampling: Sampling,
        config: ApiConfig,
        price: Price | None,
        base_url: str | None = None,
        seed: int = 0,
    ):
        config.validate()
        self.backend = backend
        self.name = backend.family
        self.sampling = sampling
        self.config = config
        self.price = price
        self.base_url = base_url
        self.rng = random.Random(seed)
        self.spend = Spend()
        self.answers_used: list[tuple[str, int, int, int]] = []
        """Cache rows of the answers the last ``complete`` returned."""
        self.stop = threading.Event()
        """Set when the run fails: requests waiting to retry give up instead of sleeping on."""
        self.breaker = threading.Lock()
        self.heard_from_server = False
        """Whether any request of this teacher reached a server (an answer or an HTTP error)."""
        self.unreachable: list[float] = []
        """``time.monotonic()`` of each request in the current streak that reached no server."""
        self.reserved = 0.0
        """Worst-case USD of the requests in flight (``config.max_spend``)."""
        self.capped = 0
        """Requests not sent because of ``config.max_spend``."""
        self.budget_lock = threading.Lock()
        if config.max_spend is not None and price is None:
            raise BoltError(
                f"--max-spend needs the price of {backend.model}: "
                "it is not in the built-in table; give one with --pricing FILE."
            )

    def describe(self) -> dict[str, Any]:
        """Goes into the manifest: the URL without credentials."""
        return {
            "backend": self.name,
            "model": self.backend.model,
            "base_url": scrub_url(self.base_url),
            "sampling": self.sampling,
            "batch": self.config.batch,
        }

    def requests(self, prompts: list[Prompt]) -> list[tuple[str, dict[str, Any]]]:
        """``(cache key, body)`` of every prompt."""
        rendered = []
        for prompt in prompts:
            body = self.backend.render(prompt.messages, self.sampling)
            rendered.append((request_key(self.backend.family, body, prompt.template_version), body))
        return rendered

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        return None if self.price is None else round(self.price.cost(input_tokens, output_tokens, self.config.batch), 6)

    def worst_case(self, body: dict[str, Any]) -> float:
        """USD a request can cost at most: its estimated input and every output token it may write."""
        texts = [m["content"] for m in body["messages"]] + ([body["system"]] if "system" in body else [])
        return self.cost(sum(estimate_tokens(text) + 4 for text in texts), self.sampling.max_tokens) or 0.0

    def spent(self) -> float:
        return self.cost(self.spend.input_tokens, self.spend.output_tokens) or 0.0

    def reserve(self, body: dict[str, Any]) -> float | None:
        """Reserve a request's worst case under ``max_spend``: its amount, or None if it does not fit (then it
        is not sent)."""
        cap = self.config.max_spend
        if cap is None:
            return 0.0
        worst = self.worst_case(body)
        with self.budget_lock:
            if self.spent() + self.reserved + worst > cap:
                self.capped += 1
                return None
            self.reserved += worst
        return worst

    def release(self, amount: float) -> None:
        with self.budget_lock:
            self.reserved -= amount

    def estimate(self, prompts: list[Prompt], cache: TeacherCache) -> dict[str, Any]:
        """What a run would send, before anything is sent (``--dry-run``)."""
        requests = dict(self.requests(prompts))
        cached = cache.get_many(list(requests))
        todo = [body for key, body in requests.items() if key not in cached]
        texts = [m["content"] for body in todo for m in body["messages"]] + [
            body["system"] for body in todo if "system" in body
        ]
        input_tokens = sum(estimate_tokens(text) + 4 for text in texts)  # + 4: each message's role and delimiters
        output_tokens = self.sampling.max_tokens * len(todo)
        return {
            "backend": self.name,
            "model": self.backend.model,
            "batch": self.config.batch,
            "prompts": len(prompts),
            "unique_requests": len(requests),
            "cached": len(cached),
            "requests_to_send": len(todo),
            "estimated_input_tokens": input_tokens,
            "max_output_tokens": output_tokens,
            "estimated_cost_usd_at_most": self.cost(input_tokens, output_tokens),
        }

    def complete(self, prompts: list[Prompt], cache: TeacherCache) -> tuple[list[str | None], dict[str, str]]:
        """An answer per prompt (``None`` where none could be had), and each failed key's reason."""
        requests = self.requests(prompts)
        keys = [key for key, _ in requests]
        cached = cache.get_many(keys)
        pending = {key: body for key, body in requests if key not in cached}
        self.spend.cached = len(set(keys)) - len(pending)
        self.stop.clear()
        progress = progress_bar(
            total=len(set(keys)),
            initial=self.spend.cached,
            desc=scrub(f"synthesize ({self.name} {self.backend.model})"),
            unit="req",
            disable=None,
        )
        try:
            failures = (
                self._batched(pending, cache, progress) if self.config.batch else self._online(pending, cache, progress)
            )
        finally:
            progress.close()
        answers = self.use_answers(keys, cache)
        return [answers[key][0] if key in answers else None for key in keys], failures

    def use_answers(self, keys: list[str], cache: TeacherCache) -> dict[str, tuple[str, int, int, int]]:
        """The cached answers of ``keys``, which ``report`` then counts as the answers used."""
        answers = cache.get_many(keys)
        self.answers_used = [answers[key] for key in set(keys) if key in answers]
        return answers

    def report(self, spend: Spend | None = None) -> dict[str, Any]:
        """Spend of this run (``spend``: the shards' spend, summed, instead of this instance's),
        and tokens and cost of every answer used (cached ones included)."""
        spend = spend or self.spend
        this_run = spend.to_json()
        this_run["cost_usd"] = self.cost(spend.input_tokens, spend.output_tokens)
        used = self.answers_used
        answers_cost = (
            None if self.price is None else round(sum(self.price.cost(row[1], row[2], bool(row[3])) for row in used), 6)
        )
        return {
            "backend": self.name,
            "model": self.backend.model,
            "batch": self.config.batch,
            "this_run": this_run,
            "answers": {
                "count": len(used),
                "input_tokens": sum(row[1] for row in used),
                "output_tokens": sum(row[2] for row in used),
                "cost_usd": answers_cost,
            },
        }

    def _answered(self, key: str, reply: Reply, cache: TeacherCache, progress) -> None:
        cache.put(
            key, reply.text, reply.input_tokens, reply.output_tokens, self.name, self.backend.model, self.config.batch
        )
        progress.update(1)
        progress.set_postfix(
            tokens=self.spend.input_tokens + self.spend.output_tokens,
            usd=self.cost(self.spend.input_tokens, self.spend.output_tokens),
        )

    # --- online --------------------------------------------------------------------

    def _online(self, pending: dict[str, dict[str, Any]], cache: TeacherCache, progress) -> dict[str, str]:
        failures: dict[str, str] = {}
        fatal: Exception | None = None
        pool = ThreadPoolExecutor(self.config.concurrency)
        lock = threading.Lock()
        try:
            futures = {
                pool.submit(self._ask_and_store, key, body, cache, progress, lock): key for key, body in pending.items()
            }
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                try:
                    reply, reason = future.result()
                except Exception as error:
                    # Send nothing more, but store what the requests already in flight bring back: it is paid for.
                    fatal = fatal or error
                    self.stop.set()
                    for other in futures:
                        other.cancel()
                    continue
                if reply is not None:  # stored already, by the thread that asked
                    continue
                failures[futures[future]] = reason
                if fatal is None and self._all_rejected():
                    fatal = BoltError(
                        f"the first {self.spend.errors[REJECTED]} requests were all refused by the {self.name} API "
                        f"({reason}), so the request itself is wrong rather than one input: "
                        "check --teacher-model, --base-url, --max-new-tokens and --temperature."
                    )
                    self.stop.set()
                    for other in futures:
                        other.cancel()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if fatal is not None:
            raise fatal
        return failures

    def _ask_and_store(
        self, key: str, body: dict[str, Any], cache: TeacherCache, progress, lock: threading.Lock
    ) -> tuple[Reply | None, str]:
        """Ask, and store a reply before this request's slot frees for the next one: a process
        killed at any moment then loses at most the ``concurrency`` replies in flight. (If the main
        thread stored them instead, finished replies waiting behind it would be lost to a kill too.)"""
        reply, reason = self._ask(body)
        if reply is not None:
            with lock:  # one SQLite connection, written by one thread at a time
                self._answered(key, reply, cache, progress)
        return reply, reason

    def _heard(self, kind: str | None, error: Exception | None = None) -> None:
        """The circuit breaker: count a request that reached no server (``UNREACHABLE``), or end the
        streak (any other outcome: something answered). Raises ``EnvironmentFault`` once the streak
        is ``unreachable_limit`` long and either no server ever answered or it lasted
        ``outage_seconds``."""
        now = time.monotonic()
        with self.breaker:
            if kind != UNREACHABLE:
                self.heard_from_server = True
                self.unreachable.clear()
                return
            self.unreachable.append(now)
            streak, lasted, heard = len(self.unreachable), now - self.unreachable[0], self.heard_from_server
        if streak < self.config.unreachable_limit or (heard and lasted < self.config.outage_seconds):
            return
        self.stop.set()
        url = scrub_url(getattr(self.backend, "endpoint", None) or self.base_url) or "the provider's default URL"
        cause = (connect_failure(error) if error is not None else None) or "no connection"
        when = f"for {lasted:.0f} s after it had answered" if heard else "and none has answered yet"
        raise EnvironmentFault(
            scrub(
                f"cannot reach the {self.name} API at {url}: "
                f"{streak} requests in a row got no connection ({cause}) {when}. "
                "Check --base-url and that the server is running and reachable from here; "
                "answers already received are kept in the cache, "
                "so rerunning the same command sends only what is unanswered."
            )
        )

    def _all_rejected(self) -> bool:
        """Whether more than two rounds of requests were refused and none was ever answered (this run or, per
        the cache, before)."""
        return (
            self.spend.requests == 0
            and self.spend.cached == 0
            and self.spend.errors[REJECTED] > 2 * self.config.concurrency
        )

    def _ask(self, body: dict[str, Any]) -> tuple[Reply | None, str]:
        """One request until a usable reply or the retry limits; other errors propagate."""
        errors = bad = 0
        while True:
            if self.stop.is_set():
                return None, "not sent: the run stopped"
            reserved = self.reserve(body)
            if reserved is None:
                return None, f"not sent: --max-spend {self.config.max_spend:g} USD reached"
            try:
                reply = self.backend.send(body)
            except Exception as error:  # the backend says which SDK errors are transient
                self.release(reserved)
                kind, retry_after = self.backend.transient(error)
                if kind is not None:
                    self.spend.add_error(kind)
                self._heard(kind, error)
                if kind is None:
                    raise BoltError(
                        scrub(
                            f"{self.name} API error that retrying cannot fix: {error}. "
                            "Check --teacher-model, --base-url and the API key."
                        )
                    ) from None
                if kind == REJECTED:
                    return None, scrub(f"{kind}: {error}")
                if errors >= self.config.max_retries:
                    return None, f"{kind} after {errors + 1} attempts"
                if self.stop.wait(
                    backoff_seconds(errors, self.config.backoff_base, self.config.backoff_max, retry_after, self.rng)
                ):
                    return None, f"{kind}, then the run stopped"
                errors += 1
                continue
            self._heard(OK)
            with self.budget_lock:
                self.spend.add_reply(reply)
                self.reserved -= reserved
            if reply.status == OK:
                return reply, ""
            if bad >= self.config.max_bad_replies:
                return None, f"{reply.status} reply after {bad + 1} tries"
            bad += 1

    # --- batch ---------------------------------------------------------------------

    def _batched(self, pending: dict[str, dict[str, Any]], cache: TeacherCache, progress) -> dict[str, str]:
        """Pick up open batches (an earlier run's included), submit what no batch covers, poll, re-submit failures."""
        tries: dict[str, int] = {}
        failures: dict[str, str] = {}
        limit = max(self.config.max_retries, self.config.max_bad_replies) + 1
        while True:
            open_batches = self._open_batches(cache)
            covered = {key for _, keys in open_batches.values() for key in keys}
            todo = [key for key in pending if key not in covered and key not in failures]
            if self.config.max_spend is not None:
                # submit only what fits under the cap, counting the open batches' worst case
                room = (
                    self.config.max_spend
                    - self.spent()
                    - sum(self.worst_case(pending[key]) for key in covered if key in pending)
                )
                fits = []
                for key in todo:
                    worst = self.worst_case(pending[key])
                    if worst > room:
                        failures[key] = f"not sent: --max-spend {self.config.max_spend:g} USD reached"
                        self.capped += 1
                        continue
                    room -= worst
                    fits.append(key)
                todo = fits
            for part in self._split(todo, pending):
                submission = uuid.uuid4().hex
                cache.begin_batch(submission, self.name, part)
                batch_id = self._submit([(key, pending[key]) for key in part], submission)
                cache.set_batch_id(submission, batch_id)
                open_batches[submission] = (batch_id, part)
            if not open_batches:
                return failures
            finished = [
                submission
                for submission, (batch_id, _) in open_batches.items()
                if self._call("polling a batch", self.backend.batch_finished, batch_id)
            ]
            for submission in finished:
                batch_id, keys = open_batches[submission]
                for key, reason in self._collect(batch_id, keys, pending, cache, progress).items():
                    tries[key] = tries.get(key, 0) + 1
                    if tries[key] >= limit:
                        failures[key] = f"{reason} ({tries[key]} batch tries)"
                cache.close_batch(submission)
                answered = cache.get_many(list(pending))
                pending = {key: body for key, body in pending.items() if key not in answered}
            if not finished:
                time.sleep(self.config.poll_interval)

    def _open_batches(self, cache: TeacherCache) -> dict[str, tuple[str, list[str]]]:
        """Open submissions with their batch ids; one a kill left without an id is looked up, or dropped if the
        provider never got it."""
        found = {}
        for submission, (batch_id, keys) in cache.open_batches(self.name).items():
            if batch_id is None:
                batch_id = self._call("looking up a batch", self.backend.find_batch, submission)
                if batch_id is None:
                    cache.close_batch(submission)
                    continue
                cache.set_batch_id(submission, batch_id)
            found[submission] = (batch_id, keys)
        return found

    def _collect(
        self, batch_id: str, keys: list[str], pending: dict[str, dict[str, Any]], cache: TeacherCache, progress
    ) -> dict[str, str]:
        """Store a finished batch's good answers; returns the reason of every key without one."""
        try:
            results = self._call("downloading batch results", self.backend.batch_results, batch_id)
        except BatchRejected:
            cache.close_batch_id(batch_id)  # a rerun must not poll it again
            raise
        missing: dict[str, str] = {}
        for key in keys:
            result = results.get(key, results.get("*", "missing from the batch results"))
            if isinstance(result, Reply):
                self.spend.add_reply(result)
                if result.status == OK:
                    self._answered(key, result, cache, progress)
                    continue
                result = f"{result.status} reply"
            else:
                self.spend.add_error("batch_item_failed")
            if key in pending:
                missing[key] = scrub(result)  # the provider's words: they may quote the key
        return missing

    def _call(self, what: str, function, *args):
        """A batch API call, retried with backoff after transient errors like an online request."""
        attempt = 0
        while True:
            try:
                result = function(*args)
            except BoltError:
                raise
            except Exception as error:
                kind, retry_after = self.backend.transient(error)
                self._heard(kind, error)
                if kind is None or kind == REJECTED or attempt >= self.config.max_retries:
                    raise BoltError(
                        scrub(
                            f"{self.name} batch API: {what} failed: {error}. "
                            "Batches already submitted are recorded in the cache: "
                            "rerun the same command to pick them up "
                            "(check --base-url and the API key if this persists)."
                        )
                    ) from None
                self.spend.add_error(kind)
                time.sleep(
                    backoff_seconds(attempt, self.config.backoff_base, self.config.backoff_max, retry_after, self.rng)
                )
                attempt += 1
                continue
            self._heard(OK)
            return result

    def _submit(self, items: list[tuple[str, dict[str, Any]]], submission: str) -> str:
        """Submit one batch; before sending it again after an error, look for it: the provider may have
        accepted it."""
        tried = False

        def submit() -> str:
            nonlocal tried
            if tried:
                found = self.backend.find_batch(submission)
                if found is not None:
                    return found
            tried = True
            return self.backend.submit_batch(items, submission)

        return self._call("submitting a batch", submit)

    def _split(self, keys: list[str], bodies: dict[str, dict[str, Any]]) -> list[list[str]]:
        """Batches within the provider's request-count and size limits."""
        parts: list[list[str]] = []
        size = 0
        for key in keys:
            line = len(json.dumps(bodies[key], ensure_ascii=False).encode("utf-8")) + 200
            if line > self.backend.max_batch_bytes:
                raise BoltError(
                    f"one request is {line} bytes, over the batch limit of {self.backend.max_batch_bytes}; "
                    "shorten the chunk or document."
                )
            if (
                not parts
                or len(parts[-1]) >= self.backend.max_batch_requests
                or size + line > self.backend.max_batch_bytes
            ):
                parts.append([])
                size = 0
            parts[-1].append(key)
            size += line
        return parts


def api_teacher(
    family: str,
    model: str,
    sampling: Sampling,
    config: ApiConfig,
    base_url: str | None = None,
    env_file: str | Path | None = None,
    pricing_file: str | Path | None = None,
    seed: int = 0,
    require_key: bool = True,
) -> ApiTeacher:
    from bolt.teachers.pricing import load_prices, price_for

    if not model:
        raise BoltError(
            f"--teacher {family} needs --teacher-model NAME "
            f"(e.g. {'gpt-4o-mini' if family == 'openai' else 'claude-haiku-4-5'})."
        )
    backend = make_backend(family, model, base_url, env_file, config.timeout, require_key)
    return ApiTeacher(
        backend, sampling, config, price_for(model, load_prices(pricing_file)), base_url=base_url, seed=seed
    )


def openai_teacher(**options: Any) -> ApiTeacher:
    """``--teacher openai``: OpenAI, or any OpenAI-compatible server with ``base_url``."""
    return api_teacher("openai", **options)


def anthropic_teacher(**options: Any) -> ApiTeacher:
    """``--teacher anthropic``."""
    return api_teacher("anthropic", **options)
