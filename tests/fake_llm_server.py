"""A local stand-in for the OpenAI and Anthropic APIs, for tests (127.0.0.1 only).

Speaks what bolt's teachers use: OpenAI chat completions, files and batches; Anthropic
messages and message batches. Answers are a pure function of the user message, so two
runs are comparable. Faults are drawn per request from a seeded generator:

- online: ``429`` (with Retry-After), ``500``, ``timeout`` (no reply before the client's
  timeout), ``malformed`` (broken JSON), ``empty``, ``truncated``, ``refused``; and, only
  when named in ``kinds``, ``400`` (this request refused) and ``401`` (a bad key);
- batches: per-item errors, whole batches that expire with only part processed, and 503s
  from the batch endpoints themselves;
- ``echo_key``: every error (400, 401, 429, 500, 503) quotes the key the client sent, in its
  body and in its headers, as careless servers and proxies do: nothing bolt writes or
  prints may then contain it.

``answered[item]`` counts good answers the server handed out per item (an item is the
hash of its user message), ``seen[item]`` every request for it.
"""

from __future__ import annotations

import email.parser
import hashlib
import itertools
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ONLINE_FAULTS = ("429", "500", "timeout", "malformed", "empty", "truncated", "refused")


def item_of(user_text: str) -> str:
    return hashlib.sha256(user_text.encode("utf-8")).hexdigest()[:12]


def answer_text(item: str) -> str:
    return f"Thought {item}: the missing step."


@dataclass
class Faults:
    rate: float = 0.0
    """Share of online requests that fail, each with a kind from ``kinds``."""
    kinds: tuple[str, ...] = ONLINE_FAULTS
    retry_after: str = "0"
    """Retry-After header sent with a 429 (seconds)."""
    retry_after_ms: str | None = None
    fail_first: int = 0
    """The first this many online requests fail with ``kinds[0]``, whatever ``rate`` says."""
    delay: float = 0.0
    """Seconds every online answer takes."""
    hang_seconds: float = 1.5
    """How long a ``timeout`` fault keeps the client waiting (longer than its timeout)."""
    batch_item_error_rate: float = 0.0
    """Share of batch items answered with an error."""
    expire_first_batches: int = 0
    """This many batches expire with only their first half processed."""
    reject_batches: bool = False
    """OpenAI batches fail validation as a whole."""
    polls_to_finish: int = 1
    """Batch status reads before a batch is done."""
    failing_batch_calls: int = 0
    """The first this many batch API calls (files, batches: create, list, status, results) answer 503."""
    echo_key: bool = False
    """Errors quote the API key the request carried, in their body and headers."""
    seed: int = 0


@dataclass
class ServerLog:
    seen: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    batches_created: int = 0
    online_requests: int = 0
    in_flight: int = 0
    """Online requests being handled right now."""
    last_activity: float = 0.0
    """``time.monotonic()`` when an online request last began or ended."""
    batch_calls: int = 0
    api_keys: set = field(default_factory=set)


class FakeLLMServer:
    def __init__(self, faults: Faults | None = None):
        self.faults = faults or Faults()
        self.log = ServerLog()
        self.rng = random.Random(self.faults.seed)
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.ids = itertools.count(1)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self, "GET")

            def do_POST(self):
                server.handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeLLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- plumbing ------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.ids)}"

    def draw(self, rate: float) -> bool:
        with self.lock:
            return self.rng.random() < rate

    @staticmethod
    def sent_key(handler) -> str:
        """The key a request carried (``Authorization: Bearer KEY`` or ``x-api-key: KEY``)."""
        value = handler.headers.get("x-api-key") or handler.headers.get("Authorization") or ""
        return value.removeprefix("Bearer ")

    def send(self, handler, status: int, body: object, headers: dict | None = None, raw: bytes | None = None) -> bool:
        if status >= 400 and self.faults.echo_key and raw is None:
            key = self.sent_key(handler)
            error = body.get("error", {}) if isinstance(body, dict) else {}
            body = {
                **(body or {}),
                "error": {**error, "message": f"{error.get('message', 'error')} (your key: {key}; Bearer {key})"},
                "echo": key,
            }
            headers = {**(headers or {}), "X-Echo-Key": key, "WWW-Authenticate": f'Bearer realm="{key}"'}
        data = raw if raw is not None else json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
            return True
        except OSError:
            return False

    def handle(self, handler, method: str) -> None:
        with self.lock:
            self.log.api_keys.add(handler.headers.get("Authorization") or handler.headers.get("x-api-key"))
        path = handler.path.split("?")[0]
        length = int(handler.headers.get("Content-Length") or 0)
        payload = handler.rfile.read(length) if length else b""
        if path not in ("/v1/chat/completions", "/v1/messages"):
            with self.lock:
                self.log.batch_calls += 1
                failing = self.log.batch_calls <= self.faults.failing_batch_calls
            if failing:
                self.send(
                    handler,
                    503,
                    {"error": {"type": "overloaded_error", "message": "try again later"}},
                    {"Retry-After": "0"},
                )
                return
        routes = {
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/messages"): self.message,
            ("POST", "/v1/files"): self.upload,
            ("POST", "/v1/batches"): self.openai_batch_create,
            ("POST", "/v1/messages/batches"): self.anthropic_batch_create,
        }
        parts = path.strip("/").split("/")
        if (method, path) in routes:
            routes[(method, path)](handler, payload)
        elif method == "GET" and parts[:2] == ["v1", "files"] and parts[-1] == "content":
            self.send(handler, 200, None, raw=self.files[parts[2]])
        elif method == "GET" and path == "/v1/batches":
            views = [self.openai_batch_view(batch_id, advance=False) for batch_id in reversed(list(self.batches))]
            self.send(handler, 200, {"object": "list", "data": views, "has_more": False})
        elif method == "GET" and parts[:2] == ["v1", "batches"]:
            self.send(handler, 200, self.openai_batch_view(parts[2]))
        elif method == "GET" and parts[:3] == ["v1", "messages", "batches"] and parts[-1] == "results":
            self.send(handler, 200, None, raw=self.batches[parts[3]]["results"])
        elif method == "GET" and parts[:3] == ["v1", "messages", "batches"]:
            self.send(handler, 200, self.anthropic_batch_view(parts[3]))
        else:
            self.send(handler, 404, {"error": {"message": f"no route {method} {path}"}})

    # --- answers -------------------------------------------------------------------

    def answer(self, user_text: str, kind: str, family: str) -> dict:
        item = item_of(user_text)
        text = {"empty": "", "refused": ""}.get(kind, answer_text(item))
        if family == "openai":
            finish = {"truncated": "length", "refused": "stop"}.get(kind, "stop")
            message = {
                "role": "assistant",
                "content": text,
                "refusal": "I can't help with that." if kind == "refused" else None,
            }
            return {
                "id": self.new_id("chatcmpl"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "fake",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": len(user_text) // 4,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": (len(user_text) + len(text)) // 4,
                },
            }
        stop = {"truncated": "max_tokens", "refused": "refusal"}.get(kind, "end_turn")
        return {
            "id": self.new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": "fake",
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": len(user_text) // 4, "output_tokens": len(text) // 4},
        }

    @staticmethod
    def user_text(body: dict) -> str:
        return "".join(m["content"] for m in body["messages"] if m["role"] == "user")

    def wait_idle(self, quiet: float = 0.2, timeout: float = 30.0) -> None:
        """Return once no online request has been in progress for ``quiet`` seconds, so counts
        read afterwards include every request of a client that was just killed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                idle = self.log.in_flight == 0 and time.monotonic() - self.log.last_activity >= quiet
            if idle:
                return
            time.sleep(0.01)
        raise TimeoutError(f"the fake server still had {self.log.in_flight} request(s) in flight after {timeout} s")

    def online(self, handler, payload: bytes, family: str) -> None:
        with self.lock:
            self.log.in_flight += 1
            self.log.last_activity = time.monotonic()
        try:
            self._online(handler, payload, family)
        finally:
            with self.lock:
                self.log.in_flight -= 1
                self.log.last_activity = time.monotonic()

    def _online(self, handler, payload: bytes, family: str) -> None:
        body = json.loads(payload)
        item = item_of(self.user_text(body))
        with self.lock:
            self.log.seen[item] += 1
            self.log.online_requests += 1
            forced = self.log.online_requests <= self.faults.fail_first
        kind = self.faults.kinds[0] if forced else self.rng_kind()
        time.sleep(self.faults.delay)
        if kind:
            with self.lock:
                self.log.faults[kind] += 1
        if kind == "429":
            headers = {
                "Retry-After": self.faults.retry_after,
                **({"retry-after-ms": self.faults.retry_after_ms} if self.faults.retry_after_ms else {}),
            }
            self.send(handler, 429, {"error": {"type": "rate_limit_error", "message": "slow down"}}, headers)
        elif kind == "500":
            self.send(handler, 500, {"error": {"type": "api_error", "message": "boom"}})
        elif kind == "400":
            self.send(handler, 400, {"error": {"type": "invalid_request_error", "message": "prompt is too long"}})
        elif kind == "401":
            self.send(handler, 401, {"error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        elif kind == "timeout":
            time.sleep(self.faults.hang_seconds)
            handler.close_connection = True
        elif kind == "malformed":
            self.send(handler, 200, None, raw=b'{"choices": [ {"message": ')
        else:
            delivered = self.send(handler, 200, self.answer(self.user_text(body), kind or "ok", family))
            if delivered and not kind:
                with self.lock:
                    self.log.answered[item] += 1

    def rng_kind(self) -> str | None:
        with self.lock:
            if self.rng.random() >= self.faults.rate:
                return None
            return self.rng.choice(self.faults.kinds)

    def chat(self, handler, payload: bytes) -> None:
        self.online(handler, payload, "openai")

    def message(self, handler, payload: bytes) -> None:
        self.online(handler, payload, "anthropic")

    # --- batches -------------------------------------------------------------------

    def upload(self, handler, payload: bytes) -> None:
        header = f"Content-Type: {handler.headers['Content-Type']}\r\n\r\n".encode()
        form = email.parser.BytesParser().parsebytes(header + payload)
        content = next(
            part.get_payload(decode=True)
            for part in form.get_payload()
            if part.get_param("name", header="content-disposition") == "file"
        )
        file_id = self.new_id("file")
        self.files[file_id] = content
        self.send(
            handler,
            200,
            {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": 0,
                "filename": "batch.jsonl",
                "purpose": "batch",
                "status": "processed",
            },
        )

    def new_batch(self, items: list[tuple[str, dict]]) -> tuple[str, dict]:
        with self.lock:
            self.log.batches_created += 1
            expire = self.log.batches_created <= self.faults.expire_first_batches
        batch_id = self.new_id("batch")
        record = {"items": items, "polls": 0, "expire": expire, "done": False}
        self.batches[batch_id] = record
        return batch_id, record

    def run_batch(self, record: dict, family: str) -> list[tuple[str, str, dict | None]]:
        """``(custom_id, outcome, answer)`` per item; outcome is ok, error or expired."""
        outcomes = []
        cutoff = len(record["items"]) // 2 if record["expire"] else len(record["items"])
        for index, (custom_id, body) in enumerate(record["items"]):
            item = item_of(self.user_text(body))
            with self.lock:
                self.log.seen[item] += 1
            if index >= cutoff:
                outcomes.append((custom_id, "expired", None))
            elif self.draw(self.faults.batch_item_error_rate):
                outcomes.append((custom_id, "error", None))
            else:
                with self.lock:
                    self.log.answered[item] += 1
                outcomes.append((custom_id, "ok", self.answer(self.user_text(body), "ok", family)))
        return outcomes

    def advance(self, batch_id: str, family: str) -> dict:
        record = self.batches[batch_id]
        record["polls"] += 1
        if family == "openai" and self.faults.reject_batches:
            record.update(
                done=True,
                status="failed",
                errors={"object": "list", "data": [{"code": "model_not_found", "message": "no such model"}]},
            )
        if not record["done"] and record["polls"] >= self.faults.polls_to_finish:
            record["done"] = True
            record["outcomes"] = self.run_batch(record, family)
            if family == "openai":
                self.finish_openai(batch_id, record)
            else:
                self.finish_anthropic(record)
        return record

    def openai_batch_create(self, handler, payload: bytes) -> None:
        request = json.loads(payload)
        lines = [
            json.loads(line) for line in self.files[request["input_file_id"]].decode().splitlines() if line.strip()
        ]
        batch_id, record = self.new_batch([(line["custom_id"], line["body"]) for line in lines])
        record["input_file_id"] = request["input_file_id"]
        record["metadata"] = request.get("metadata")
        self.send(handler, 200, self.openai_batch_view(batch_id, advance=False))

    def finish_openai(self, batch_id: str, record: dict) -> None:
        output, errors = [], []
        for custom_id, outcome, answer in record["outcomes"]:
            if outcome == "ok":
                output.append(
                    {
                        "id": "r",
                        "custom_id": custom_id,
                        "response": {"status_code": 200, "request_id": "q", "body": answer},
                        "error": None,
                    }
                )
            elif outcome == "error":
                errors.append(
                    {
                        "id": "r",
                        "custom_id": custom_id,
                        "response": {"status_code": 500, "request_id": "q", "body": {"error": {"message": "boom"}}},
                        "error": None,
                    }
                )
            else:
                errors.append(
                    {
                        "id": "r",
                        "custom_id": custom_id,
                        "response": None,
                        "error": {"code": "batch_expired", "message": "expired"},
                    }
                )
        for name, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                file_id = self.new_id("file")
                self.files[file_id] = "".join(json.dumps(row) + "\n" for row in rows).encode()
                record[name] = file_id
        record["status"] = "expired" if record["expire"] else "completed"

    def openai_batch_view(self, batch_id: str, advance: bool = True) -> dict:
        record = self.advance(batch_id, "openai") if advance else self.batches[batch_id]
        return {
            "id": batch_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "created_at": 0,
            "input_file_id": record["input_file_id"],
            "status": record.get("status", "in_progress"),
            "output_file_id": record.get("output_file_id"),
            "error_file_id": record.get("error_file_id"),
            "metadata": record.get("metadata"),
            "errors": record.get("errors"),
        }

    def anthropic_batch_create(self, handler, payload: bytes) -> None:
        request = json.loads(payload)
        batch_id, _ = self.new_batch([(entry["custom_id"], entry["params"]) for entry in request["requests"]])
        self.send(handler, 200, self.anthropic_batch_view(batch_id, advance=False))

    def finish_anthropic(self, record: dict) -> None:
        rows = []
        for custom_id, outcome, answer in record["outcomes"]:
            if outcome == "ok":
                result = {"type": "succeeded", "message": answer}
            elif outcome == "error":
                result = {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": "api_error", "message": "boom"}},
                }
            else:
                result = {"type": "expired"}
            rows.append({"custom_id": custom_id, "result": result})
        record["results"] = "".join(json.dumps(row) + "\n" for row in rows).encode()

    def anthropic_batch_view(self, batch_id: str, advance: bool = True) -> dict:
        record = self.advance(batch_id, "anthropic") if advance else self.batches[batch_id]
        ended = record["done"]
        counts = Counter(outcome for _, outcome, _ in record.get("outcomes", []))
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else len(record["items"]),
                "succeeded": counts["ok"],
                "errored": counts["error"],
                "canceled": 0,
                "expired": counts["expired"],
            },
            "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": "2026-01-01T01:00:00Z" if ended else None,
            "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
        }
