"""The teacher protocol and the registry of backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from bolt.errors import BoltError


@dataclass(frozen=True)
class LatentRequest:
    """Write the latent thought behind ``text``, which follows ``prefix`` in document ``document_id``."""

    document_id: str
    chunk_index: int
    prefix: str
    text: str


class Teacher(Protocol):
    """A backend that writes one latent per request, in order (local teachers: hf, oracle).

    Prompt teachers (the chat APIs, vLLM) instead answer rendered chat prompts, which
    lets them serve every ``--method``: they have ``complete(prompts, cache)`` returning
    an answer (or ``None``) per prompt and the reasons of failures, a ``spend``
    (``chat.Spend``) counting what they sent, and ``report(spend)`` describing a spend
    (theirs, or the sum of a sharded run's shards).
    """

    name: str

    def describe(self) -> dict[str, Any]:
        """What identifies this teacher's outputs (model, template version, sampling): goes in the manifest."""
        ...

    def write_latents(self, requests: list[LatentRequest]) -> list[str]: ...


BACKENDS = {
    "anthropic": "bolt.teachers.api_teacher:anthropic_teacher",
    "hf": "bolt.teachers.hf_local:HFTeacher",
    "openai": "bolt.teachers.api_teacher:openai_teacher",
    "vllm": "bolt.teachers.vllm_offline:VLLMTeacher",
    "oracle": "bolt.apps.world.world:OracleTeacher",
}


@dataclass(frozen=True)
class TeacherSpec:
    """How to build a teacher: its backend name and constructor options, never a live client.

    Sharded runs send this to every worker, which builds its own teacher there
    (``build``): SDK clients, models and API keys never cross a process boundary. An API
    teacher reads its key inside the worker, from the environment or the ``env_file``
    option, so the options must hold no key.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        secret = [key for key in self.options if "key" in key.lower() and key != "require_key"]
        if secret:
            raise BoltError(
                f"a teacher spec travels to workers and must hold no API key (got option {secret[0]!r}); "
                "set the key in the environment or an --env-file."
            )

    def build(self) -> Teacher:
        return make_teacher(self.name, **self.options)


def make_teacher(name: str, **options: Any) -> Teacher:
    if name not in BACKENDS:
        raise BoltError(f"unknown --teacher {name!r}; available: {', '.join(sorted(BACKENDS))}.")
    module_name, class_name = BACKENDS[name].split(":")
    import importlib

    return getattr(importlib.import_module(module_name), class_name)(**options)
