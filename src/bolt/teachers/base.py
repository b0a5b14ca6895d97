"""The teacher protocol and the registry of backends."""

from __future__ import annotations

from dataclasses import dataclass
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
    an answer (or ``None``) per prompt and the reasons of failures, and ``report()``
    returning their token spend.
    """

    name: str

    def describe(self) -> dict[str, Any]:
        """What identifies this teacher's outputs (model, template version, sampling): goes in the manifest."""
        ...

    def write_latents(self, requests: list[LatentRequest]) -> list[str]:
        ...


BACKENDS = {
    "anthropic": "bolt.teachers.api_teacher:anthropic_teacher",
    "hf": "bolt.teachers.hf_local:HFTeacher",
    "openai": "bolt.teachers.api_teacher:openai_teacher",
    "vllm": "bolt.teachers.vllm_offline:VLLMTeacher",
    "oracle": "bolt.world:OracleTeacher",
}


def make_teacher(name: str, **options: Any) -> Teacher:
    if name not in BACKENDS:
        raise BoltError(f"unknown --teacher {name!r}; available: {', '.join(sorted(BACKENDS))}.")
    module_name, class_name = BACKENDS[name].split(":")
    import importlib

    return getattr(importlib.import_module(module_name), class_name)(**options)
