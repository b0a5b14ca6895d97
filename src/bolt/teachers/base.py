"""The teacher protocol and the registry of backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bolt.errors import BoltError

if TYPE_CHECKING:
    from bolt.teachers.cache import TeacherCache
    from bolt.teachers.chat import Spend


@dataclass(frozen=True)
class LatentRequest:
    """Write the latent thought behind ``text``, which follows ``prefix`` in document ``document_id``."""

    document_id: str
    chunk_index: int
    prefix: str
    text: str


@runtime_checkable
class Teacher(Protocol):
    """A backend that writes one latent per request, in order (local teachers: hf, oracle)."""

    name: str

    def describe(self) -> dict[str, Any]:
        """What identifies this teacher's outputs (model, template version, sampling): goes in the manifest."""
        ...

    def write_latents(self, requests: list[LatentRequest]) -> list[str]: ...


@runtime_checkable
class PromptTeacher(Protocol):
    """A backend that answers rendered chat prompts (the chat APIs, vLLM), so it serves every
    ``--method`` (latent, wrap, wrap-cot). Answers go through the shared cache as they arrive."""

    name: str
    spend: Spend
    """What this teacher sent and received in this process."""

    def describe(self) -> dict[str, Any]: ...

    def complete(self, prompts: list, cache: TeacherCache) -> tuple[list[str | None], dict[str, str]]:
        """An answer (or None) per prompt, and the reason of each failure by request key."""
        ...

    def report(self, spend: Spend | None = None) -> dict[str, Any]:
        """A spend (this teacher's, or the sum of a sharded run's shards) for spend.json."""
        ...


@runtime_checkable
class PricedTeacher(PromptTeacher, Protocol):
    """A prompt teacher that pays per token: it prices a run before sending anything (``--dry-run``)
    and counts the cached answers a run used."""

    def requests(self, prompts: list) -> list[tuple[str, dict[str, Any]]]:
        """(cache key, request body) per prompt."""
        ...

    def estimate(self, prompts: list, cache: TeacherCache) -> dict[str, Any]: ...

    def use_answers(self, keys: list[str], cache: TeacherCache) -> dict[str, tuple[str, int, int, int]]: ...


BACKENDS = {
    "anthropic": "bolt.teachers.api_teacher:anthropic_teacher",
    "hf": "bolt.teachers.hf_local:HFTeacher",
    "openai": "bolt.teachers.api_teacher:openai_teacher",
    "vllm": "bolt.teachers.vllm_offline:VLLMTeacher",
    "oracle": "bolt.apps.world.world:OracleTeacher",
}
"""Backend name -> ``module:constructor``, imported only when that backend is built."""


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

    def build(self) -> Teacher | PromptTeacher:
        return make_teacher(self.name, **self.options)


def make_teacher(name: str, **options: Any) -> Teacher | PromptTeacher:
    if name not in BACKENDS:
        raise BoltError(f"unknown --teacher {name!r}; available: {', '.join(sorted(BACKENDS))}.")
    module_name, class_name = BACKENDS[name].split(":")
    import importlib

    return getattr(importlib.import_module(module_name), class_name)(**options)
