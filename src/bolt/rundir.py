"""Run directories: where every command writes its outputs, manifest and metrics.

Layout of a run directory::

    manifest.json   command, full config, package versions, seed, input hashes,
                    start/end times and status ("running" / "complete")
    metrics.jsonl   one JSON object per logged event (training steps, evaluations)
    ...             the command's own outputs, each written atomically

A manifest with ``status == "complete"`` and the same config is how a rerun knows a
stage is already done (``RunDir.is_complete``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from bolt.records import write_json

_PACKAGES = ("bolt-latent", "torch", "transformers", "accelerate", "tokenizers", "safetensors", "nupunkt")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def config_to_json(config: Any) -> Any:
    """Dataclasses (nested) to plain JSON values; paths become strings."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_json(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, dict):
        return {str(key): config_to_json(value) for key, value in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_json(value) for value in config]
    if isinstance(config, Path):
        return str(config)
    return config


class RunDir:
    """A directory holding one command's outputs, with its manifest and metrics."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest_path = self.path / "manifest.json"
        self.metrics_path = self.path / "metrics.jsonl"

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def is_complete(self, config: Any, inputs: dict[str, str | Path] | None = None) -> bool:
        """Complete with the same config and, for each input file given, the same content (sha256)."""
        manifest = self.read_manifest()
        if not (manifest and manifest.get("status") == "complete" and manifest.get("config") == config_to_json(config)):
            return False
        recorded = manifest.get("inputs", {})
        return all(recorded.get(name, {}).get("sha256") == file_sha256(p) for name, p in (inputs or {}).items() if Path(p).is_file())

    def start(self, command: str, config: Any, inputs: dict[str, str | Path] | None = None, seed: int | None = None) -> None:
        """Write a 'running' manifest. Inputs are hashed so results can be traced."""
        self.path.mkdir(parents=True, exist_ok=True)
        previous = self.read_manifest() or {}
        self._started = time.monotonic()
        self._manifest = {
            "command": command,
            "argv": sys.argv,
            "config": config_to_json(config),
            "seed": seed,
            "versions": package_versions(),
            "inputs": {name: {"path": str(p), "sha256": file_sha256(p)} for name, p in (inputs or {}).items() if Path(p).is_file()},
            "started_at": _now(),
            "first_started_at": previous.get("first_started_at", _now()),
            "status": "running",
        }
        write_json(self.manifest_path, self._manifest)

    def finish(self, **summary: Any) -> None:
        self._manifest.update(
            status="complete",
            finished_at=_now(),
            seconds=round(time.monotonic() - self._started, 3),
            summary=config_to_json(summary),
        )
        write_json(self.manifest_path, self._manifest)

    def log_metrics(self, **values: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": _now(), **config_to_json(values)}) + "\n")


def run_dir_for_file(output: str | Path) -> RunDir:
    """The run directory of a stage whose output is one file: ``OUT.run/`` beside it."""
    output = Path(output)
    return RunDir(output.with_name(output.name + ".run"))


def run_stage(command: str, run: RunDir, output: Path, config: Any, work: Callable[[RunDir], dict], inputs: dict[str, Path] | None = None, seed: int | None = None) -> dict:
    """Run ``work`` inside ``run`` unless a complete run with the same config already produced ``output``."""
    if output.exists() and run.is_complete(config, inputs):
        return run.read_manifest()["summary"]
    run.start(command, config, inputs=inputs, seed=seed)
    summary = work(run)
    run.finish(**summary)
    return summary


def partial_key(config: Any, input_path: str | Path) -> str:
    """Identifies the partial results of a stage: its config and its input file's bytes."""
    payload = json.dumps([config_to_json(config), file_sha256(input_path)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
