"""Run directories: where every command writes its outputs, manifest and metrics.

Layout of a run directory::

    manifest.json   command, full config, package versions, seed, input hashes,
                    start/end times and status ("running" / "complete", or "failed" / "interrupted"
                    with the scrubbed error when the command stopped with an error or Ctrl-C)
    metrics.jsonl   one JSON object per logged event (training steps, evaluations)
    ...             the command's own outputs, each written atomically

A manifest with ``status == "complete"`` and the same config is how a rerun knows a
stage is already done (``RunDir.is_complete``); the manifest of a finished run also records
the size and sha256 of each output file, which a rerun checks before trusting it
(``RunDir.verify_outputs``): a damaged output is computed again.

Outputs are the user's: a command writes only into a path that does not exist, an empty
directory, or a run directory of bolt's (recognised by its manifest) of the same command and
config (``RunDir.claim``). A run directory of another config is replaced only with
``--overwrite`` (``overwrite=True``, or ``BOLT_OVERWRITE=1`` for stages a command runs inside
itself), and then only what bolt wrote there goes; a non-empty directory without a manifest,
or an output file bolt did not write, is never replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from bolt.core.records import atomic_path, is_temporary, remove_path, remove_stale_temporaries, write_json
from bolt.core.scrub import scrub
from bolt.errors import BoltError

OVERWRITE_ENVIRONMENT = "BOLT_OVERWRITE"
"""Set to 1 (``bolt COMMAND --overwrite`` does) to let every stage of this process and its
workers replace bolt's outputs of another config."""

SCRATCH = (
    "metrics.jsonl",
    "checkpoints",
    "tokens",
    "partial.jsonl",
    "partial-*.jsonl",
    "failures.jsonl",
    "spend.json",
    "bounds.partial.jsonl",
)
"""What bolt writes in a run directory besides the manifest and the recorded outputs: removed
when ``--overwrite`` replaces a run of another config (caches such as teacher-cache.sqlite,
keyed by what they hold, stay)."""


def overwrite_allowed(overwrite: bool | None = None) -> bool:
    """``overwrite`` itself, or where it is None, whether ``BOLT_OVERWRITE=1`` is set."""
    return overwrite if overwrite is not None else os.environ.get(OVERWRITE_ENVIRONMENT) == "1"


def _without(value: Any, ignore: tuple[str, ...]) -> Any:
    """``value`` with the keys named in ``ignore`` dropped at every depth."""
    if isinstance(value, dict):
        return {key: _without(item, ignore) for key, item in value.items() if key not in ignore}
    if isinstance(value, list):
        return [_without(item, ignore) for item in value]
    return value


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
        for block in iter(lambda: handle.read(1 << 16), b""):  # 64 KiB: hashing holds no more than that of any file
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
        """The manifest; None where there is none; ``{"status": "unreadable"}`` where it cannot be read."""
        if not self.manifest_path.is_file():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {"status": "unreadable"}
        return manifest if isinstance(manifest, dict) else {"status": "unreadable"}

    def foreign_entries(self, own: tuple[str, ...] = ()) -> list[str]:
        """Names in the directory that bolt did not write, where it has no manifest (temporaries and ``own`` aside)."""
        if not self.path.is_dir() or self.manifest_path.is_file():
            return []
        return sorted(entry.name for entry in self.path.iterdir() if entry.name not in own and not is_temporary(entry))

    def claim(
        self,
        command: str,
        config: Any,
        overwrite: bool | None = None,
        ignore: tuple[str, ...] = (),
        own: tuple[str, ...] = (),
        replace: bool = True,
    ) -> bool:
        """Check that ``command`` with ``config`` may write here; refuse with a ``BoltError`` otherwise.

        Allowed: no directory, an empty one, or a run directory of the same command and config
        (the keys in ``ignore`` aside: those that do not change the result). A run of another
        config needs ``overwrite`` (see ``overwrite_allowed``); then, with ``replace``, what bolt
        wrote there is removed. A non-empty directory without a manifest is never written
        into (``own``: names a caller put there itself before). Returns whether a run of
        another config is to be replaced (with ``replace=False`` the caller removes it later
        with ``remove_written``).
        """
        if self.path.exists() and not self.path.is_dir():
            raise BoltError(
                f"{self.path}: is a file, where bolt needs a directory; "
                "name a directory that does not exist yet (or an empty one)."
            )
        check_parent_directories(self.path)
        manifest = self.read_manifest()
        if manifest is None:
            foreign = self.foreign_entries(own)
            if foreign:
                shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                raise BoltError(
                    f"{self.path}: not empty ({shown}) and not written by bolt (no manifest.json); "
                    "bolt never replaces what it did not write, "
                    "even with --overwrite: name another output path."
                )
            return False
        if manifest.get("command") == command and _without(manifest.get("config"), ignore) == _without(
            config_to_json(config), ignore
        ):
            return False
        what = f"`bolt {manifest['command']}`" if manifest.get("command") else "bolt"
        if not overwrite_allowed(overwrite):
            raise BoltError(
                f"{self.path}: holds the output of a {what} run with another config (see its manifest.json); "
                "pass --overwrite to replace what bolt wrote there, or name another output path."
            )
        if replace:
            self.remove_written(manifest)
        return True

    def remove_written(self, manifest: dict[str, Any] | None = None) -> None:
        """Remove what bolt wrote here for the run of ``manifest`` (default: the current one): its
        recorded outputs and bolt's scratch (``SCRATCH``); the manifest itself is rewritten by ``start``."""
        manifest = self.read_manifest() if manifest is None else manifest
        for name in (manifest or {}).get("outputs", {}):
            remove_path(self.path / name)
        for pattern in SCRATCH:
            for path in self.path.glob(pattern):
                remove_path(path)

    def record_outputs(self, paths: list[str | Path]) -> None:
        """Record the size and sha256 of each output file in the manifest that ``finish`` writes."""
        self._manifest["outputs"] = {
            os.path.relpath(path, self.path): {"size": Path(path).stat().st_size, "sha256": file_sha256(path)}
            for path in paths
        }

    def verify_outputs(self) -> list[str]:
        """What differs from the outputs the manifest records (missing, size, sha256): empty when all are intact
        (or, for a manifest of an older bolt, none are recorded)."""
        problems = []
        for name, recorded in ((self.read_manifest() or {}).get("outputs") or {}).items():
            path = self.path / name
            where = os.path.normpath(path)
            if not path.is_file():
                problems.append(f"{where} is missing")
            elif path.stat().st_size != recorded.get("size"):
                problems.append(f"{where} has {path.stat().st_size} bytes where bolt wrote {recorded.get('size')}")
            elif file_sha256(path) != recorded.get("sha256"):
                problems.append(f"{where} has changed since bolt wrote it (sha256 differs)")
        return problems

    def truncate_metrics(self, last_step: int) -> None:
        """Drop the metrics lines of steps after ``last_step`` (those a resumed run logs again), and a last line a
        kill cut."""
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_bytes().split(b"\n"):
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(row, dict) and not (isinstance(row.get("step"), (int, float)) and row["step"] > last_step):
                kept.append(line + b"\n")
        with atomic_path(self.metrics_path) as temporary:
            temporary.write_bytes(b"".join(kept))

    def discard_if_unused(self, keep: tuple[Path, ...] = ()) -> None:
        """After a failed run that created this directory: remove it where it holds nothing but the
        manifest, metrics and temporaries (no partial results to resume from), and none of ``keep`` exists."""
        if not self.path.is_dir() or any(Path(path).exists() for path in keep):
            return
        if all(
            entry.name in ("manifest.json", "metrics.jsonl") or is_temporary(entry) for entry in self.path.iterdir()
        ):
            shutil.rmtree(self.path, ignore_errors=True)

    def is_complete(self, config: Any, inputs: dict[str, str | Path] | None = None) -> bool:
        """Complete with the same config and, for each input file given, the same content (sha256)."""
        manifest = self.read_manifest()
        if not (manifest and manifest.get("status") == "complete" and manifest.get("config") == config_to_json(config)):
            return False
        recorded = manifest.get("inputs", {})
        return all(
            recorded.get(name, {}).get("sha256") == file_sha256(p)
            for name, p in (inputs or {}).items()
            if Path(p).is_file()
        )

    def start(
        self, command: str, config: Any, inputs: dict[str, str | Path] | None = None, seed: int | None = None
    ) -> None:
        """Write a 'running' manifest. Inputs are hashed so results can be traced.

        A directory that is not empty and has no manifest is refused (``claim`` says more).
        """
        if (self.path.exists() and not self.path.is_dir()) or (self.read_manifest() is None and self.foreign_entries()):
            self.claim(command, config)  # raises: a file, or a directory of what bolt did not write
        check_parent_directories(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        previous = self.read_manifest() or {}
        self._started = time.monotonic()
        self._manifest = {
            "command": command,
            "argv": [
                scrub(arg) for arg in sys.argv
            ],  # a --base-url http://user:KEY@host, say, also when called as a library
            "config": config_to_json(config),
            "seed": seed,
            "versions": package_versions(),
            "inputs": {
                name: {"path": str(p), "sha256": file_sha256(p)}
                for name, p in (inputs or {}).items()
                if Path(p).is_file()
            },
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

    def fail(self, error: BaseException | str) -> bool:
        """Mark a manifest this process left 'running' as 'failed' ('interrupted' after Ctrl-C), with the (scrubbed)
        error; False where there is none."""
        manifest = self.read_manifest()
        if not manifest or manifest.get("status") != "running":
            return False
        interrupted = isinstance(error, KeyboardInterrupt)
        text = (
            "interrupted (Ctrl-C or SIGINT)"
            if interrupted
            else str(error)
            if isinstance(error, BoltError)
            else f"{type(error).__name__}: {error}"
        )
        manifest.update(status="interrupted" if interrupted else "failed", failed_at=_now(), error=scrub(text)[:2000])
        try:
            write_json(self.manifest_path, manifest)
        except OSError:
            return False  # a full or read-only disk: the manifest stays as it was
        return True

    def log_metrics(self, **values: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.metrics_path.is_file() and self.metrics_path.stat().st_size:
            with open(self.metrics_path, "rb") as handle:  # a kill cut the last line: end it before appending
                handle.seek(-1, os.SEEK_END)
                cut = handle.read(1) != b"\n"
            if cut:
                self.truncate_metrics(float("inf"))
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": _now(), **config_to_json(values)}) + "\n")


def run_dir_for_file(output: str | Path) -> RunDir:
    """The run directory of a stage whose output is one file: ``OUT.run/`` beside it."""
    output = Path(output)
    return RunDir(output.with_name(output.name + ".run"))


def check_parent_directories(path: str | Path) -> None:
    """Refuse an output path below a file (``-o notes.txt/out.jsonl``): bolt could never create it."""
    for parent in Path(path).absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise BoltError(f"{path}: {parent} is a file, not a directory; name an output path in a directory.")
            return


def check_output_path(command: str, output: Path, run: RunDir, inputs: dict[str, str | Path] | None = None) -> None:
    """Refuse an output file that is also an input, is a directory, or exists without bolt's manifest."""
    for name, path in (inputs or {}).items():
        if Path(path).resolve() == output.resolve():
            raise BoltError(
                f"{output}: is also the {name} input of `bolt {command}`; "
                "writing it would destroy the input: name another output path with -o."
            )
    if output.is_dir():
        raise BoltError(f"{output}: is a directory; -o names the output file of `bolt {command}`.")
    check_parent_directories(output)
    if output.exists() and run.read_manifest() is None:
        raise BoltError(
            f"{output}: exists and bolt did not write it (no {run.manifest_path}); "
            "bolt never replaces it, even with --overwrite: name another output path."
        )


def run_stage(
    command: str,
    run: RunDir,
    output: Path,
    config: Any,
    work: Callable[[RunDir], dict],
    inputs: dict[str, Path] | None = None,
    seed: int | None = None,
    overwrite: bool | None = None,
    ignore: tuple[str, ...] = (),
    own: tuple[str, ...] = (),
    extra_outputs: tuple[Path, ...] = (),
) -> dict:
    """Run ``work`` inside ``run`` unless a complete run with the same config already produced ``output``, intact.

    ``output`` is claimed first (``check_output_path``, ``RunDir.claim`` with ``overwrite``,
    ``ignore`` and ``own``; ``extra_outputs``: further files ``work`` writes, recorded and checked
    like ``output``); temporaries a killed writer left beside it are removed. A finished
    output whose size or sha256 differs from the manifest's record is computed again, with a
    warning. A run that fails leaves no run directory it created and has nothing to resume from.
    """
    output = Path(output)
    check_output_path(command, output, run, inputs)
    remove_stale_temporaries(output)
    run.claim(command, config, overwrite=overwrite, ignore=ignore, own=own)
    if output.exists() and run.is_complete(config, inputs):
        problems = run.verify_outputs()
        if not problems:
            return run.read_manifest()["summary"]
        warnings.warn(f"{problems[0]}: computing it again.", stacklevel=3)
    created = not run.path.exists()
    run.start(command, config, inputs=inputs, seed=seed)
    try:
        summary = work(run)
    except BaseException as exc:
        if created:
            run.discard_if_unused(keep=(output,))
        run.fail(exc)
        raise
    run.record_outputs([output, *extra_outputs])
    run.finish(**summary)
    return summary


def partial_key(config: Any, input_path: str | Path) -> str:
    """Identifies the partial results of a stage: its config and its input file's bytes."""
    payload = json.dumps([config_to_json(config), file_sha256(input_path)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
