"""OpenAI-compatible chat completions and the OpenAI Batch API, through the ``openai`` SDK.

With ``--base-url`` the same backend talks to any compatible server (vLLM's or SGLang's
``serve``, a proxy). The SDK's own retries are off: ``api_teacher`` retries with its
own backoff, so every attempt is counted. Imported only when ``--teacher openai`` is used.
"""

from __future__ import annotations

import json
from typing import Any

from bolt.errors import BoltError
from bolt.teachers.chat import BatchRejected, Reply, Sampling, checked_reply, sdk_error_kind, sdk_timeout

CHAT_PATH = "/v1/chat/completions"
TERMINAL_BATCH_STATES = ("completed", "failed", "expired", "cancelled")


def _import_openai():
    try:
        import openai
    except ImportError:
        raise BoltError("--teacher openai needs the openai package: pip install 'bolt-latent[api]'.") from None
    return openai


def parse_completion(completion: Any) -> Reply:
    """A ``Reply`` from a chat-completion object (a dict, as decoded JSON)."""
    try:
        choice = completion["choices"][0]
        message = choice["message"]
        usage = completion.get("usage") or {}
        return checked_reply(
            text=message.get("content"),
            truncated=choice.get("finish_reason") == "length",
            refused=bool(message.get("refusal")) or choice.get("finish_reason") == "content_filter",
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        return Reply(text="", status="malformed")


class OpenAIBackend:
    family = "openai"
    max_batch_requests = 50_000
    max_batch_bytes = 190 * 1024 * 1024  # the API's limit is 200 MB per input file

    def __init__(self, model: str, api_key: str, base_url: str | None = None, timeout: float = 120.0):
        openai = _import_openai()
        self.model = model
        self.openai = openai
        self.client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=sdk_timeout(openai, timeout), max_retries=0
        )
        self.endpoint = str(self.client.base_url)
        """Where requests go (the provider's default URL unless ``base_url``); may hold credentials: scrub
        before showing."""

    def render(self, messages: list[dict[str, str]], sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_completion_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    def send(self, body: dict[str, Any]) -> Reply:
        return parse_completion(self.client.chat.completions.create(**body).to_dict())

    def transient(self, error: Exception) -> tuple[str | None, float | None]:
        return sdk_error_kind(self.openai, error)

    def submit_batch(self, items: list[tuple[str, dict[str, Any]]], submission: str) -> str:
        lines = [
            json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT_PATH, "body": body}, ensure_ascii=False)
            for custom_id, body in items
        ]
        upload = self.client.files.create(
            file=("bolt-batch.jsonl", ("\n".join(lines) + "\n").encode("utf-8")), purpose="batch"
        )
        batch = self.client.batches.create(
            completion_window="24h",
            endpoint=CHAT_PATH,
            input_file_id=upload.id,
            metadata={"bolt_submission": submission},
        )
        return batch.id

    def find_batch(self, submission: str) -> str | None:
        for scanned, batch in enumerate(self.client.batches.list(limit=100)):
            if (batch.metadata or {}).get("bolt_submission") == submission:
                return batch.id
            if scanned >= 2000:  # newest first: an orphan from a killed run is among the latest
                break
        return None

    def batch_finished(self, batch_id: str) -> bool:
        return self.client.batches.retrieve(batch_id).status in TERMINAL_BATCH_STATES

    def batch_results(self, batch_id: str) -> dict[str, Reply | str]:
        batch = self.client.batches.retrieve(batch_id)
        if batch.status == "failed":
            messages = (
                "; ".join(f"{error.code}: {error.message}" for error in (batch.errors.data or []))
                if batch.errors
                else "no reason given"
            )
            raise BatchRejected(
                f"OpenAI rejected batch {batch_id} ({messages}). Check --teacher-model and the request parameters."
            )
        results: dict[str, Reply | str] = {}
        for file_id in (batch.error_file_id, batch.output_file_id):  # output last: it wins if both name an id
            if not file_id:
                continue
            for line in self.client.files.content(file_id).text.splitlines():
                if line.strip():
                    custom_id, result = _batch_line(line)
                    if custom_id is not None:
                        results[custom_id] = result
        return results or {"*": f"batch {batch_id} ended '{batch.status}' without results"}


def _batch_line(line: str) -> tuple[str | None, Reply | str]:
    try:
        row = json.loads(line)
        custom_id = row["custom_id"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None, "unreadable result line"
    response = row.get("response") or {}
    if response.get("status_code") == 200:
        return custom_id, parse_completion(response.get("body"))
    error = row.get("error") or (response.get("body") or {}).get("error") or {}
    return custom_id, f"{error.get('code', response.get('status_code', 'error'))}: {error.get('message', '')}".strip()
