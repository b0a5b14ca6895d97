"""Anthropic Messages and Message Batches, through the ``anthropic`` SDK.

The SDK's own retries are off: ``api_teacher`` retries with its own backoff, so every
attempt is counted. Imported only when ``--teacher anthropic`` is used.
"""

from __future__ import annotations

from typing import Any

from bolt.errors import BoltError
from bolt.teachers.chat import Reply, Sampling, checked_reply, sdk_error_kind, sdk_timeout


def _import_anthropic():
    try:
        import anthropic
    except ImportError:
        raise BoltError("--teacher anthropic needs the anthropic package: pip install 'bolt-latent[api]'.") from None
    return anthropic


def parse_message(message: Any) -> Reply:
    """A ``Reply`` from a Messages API response (a dict, as decoded JSON)."""
    try:
        text = "".join(block.get("text", "") for block in message["content"] if block.get("type") == "text")
        usage = message.get("usage") or {}
        return checked_reply(
            text=text,
            truncated=message.get("stop_reason") == "max_tokens",
            refused=message.get("stop_reason") == "refusal",
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        return Reply(text="", status="malformed")


class AnthropicBackend:
    family = "anthropic"
    max_batch_requests = 100_000
    max_batch_bytes = 250 * 1024 * 1024  # the API's limit is 256 MB per batch

    def __init__(self, model: str, api_key: str, base_url: str | None = None, timeout: float = 120.0):
        anthropic = _import_anthropic()
        self.model = model
        self.anthropic = anthropic
        self.client = anthropic.Anthropic(
            api_key=api_key, base_url=base_url, timeout=sdk_timeout(anthropic, timeout), max_retries=0
        )
        self.endpoint = str(self.client.base_url)
        """Where requests go (the provider's default URL unless ``base_url``); may hold credentials: scrub
        before showing."""

    def render(self, messages: list[dict[str, str]], sampling: Sampling) -> dict[str, Any]:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        # The Messages API of anthropic 2.x has no temperature or seed: the model's own sampling is used.
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": sampling.max_tokens,
            "messages": [m for m in messages if m["role"] != "system"],
        }
        if system:
            body["system"] = system
        return body

    def send(self, body: dict[str, Any]) -> Reply:
        return parse_message(self.client.messages.create(**body).to_dict())

    def transient(self, error: Exception) -> tuple[str | None, float | None]:
        return sdk_error_kind(self.anthropic, error)

    def submit_batch(self, items: list[tuple[str, dict[str, Any]]], submission: str) -> str:
        batch = self.client.messages.batches.create(
            requests=[{"custom_id": custom_id, "params": body} for custom_id, body in items]
        )
        return batch.id

    def find_batch(self, submission: str) -> str | None:
        # Message batches carry no metadata to find them by: a batch whose id a kill kept
        # from being recorded is submitted again (the requests' answers are the same).
        return None

    def batch_finished(self, batch_id: str) -> bool:
        return self.client.messages.batches.retrieve(batch_id).processing_status == "ended"

    def batch_results(self, batch_id: str) -> dict[str, Reply | str]:
        results: dict[str, Reply | str] = {}
        for entry in self.client.messages.batches.results(batch_id):
            row = entry.to_dict()
            result = row.get("result") or {}
            if result.get("type") == "succeeded":
                results[row["custom_id"]] = parse_message(result.get("message"))
            else:
                error = (result.get("error") or {}).get("error") or {}
                results[row["custom_id"]] = f"{result.get('type', 'unknown')}: {error.get('message', '')}".strip()
        return results
