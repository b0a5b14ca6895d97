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
    """A backend that writes one latent per request, in order."""

    name: str

    def describe(self) -> dict[str, Any]:
        """What identifies this teacher's outputs (model, template version, sampling): goes in the manifest."""
        ...

    def write_latents(self, requests: list[LatentRequest]) -> list[str]:
        ...


BACKENDS = {
    "hf": "bolt.teachers.hf_local:HFTeacher",
    "oracle": "bolt.world:OracleTeacher",
}


def make_teacher(name: str, **options: Any) -> Teacher:
    if name not in BACKENDS:
        raise BoltError(f"unknown --teacher {name!r}; available: {', '.join(sorted(BACKENDS))}.")
    module_name, class_name = BACKENDS[name].split(":")
    import importlib

    return getattr(importlib.import_module(module_name), class_name)(**options)
