"""File formats between stages, and safe reading and writing of them.

Every format is documented in ``docs/FORMATS.md``. In short:

- corpus (input):   JSONL / JSON array / Parquet, one document per row with ``text``
                    and optional ``id`` and any other fields (kept as metadata).
- ``bolt.chunks/1``: JSONL, one document per line:
                    ``{"format", "id", "chunks": [{"text", "prefix"}, ...], "meta"}``.
- ``bolt.latents/1``: the same, every chunk also carrying ``latent`` (and, from the
                    E-step, its scores).

Readers name the file and line of any problem; writers never leave a half-written
file behind (``atomic_path``).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import re
import shutil
import socket
import warnings
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bolt.errors import BoltError

CHUNKS_FORMAT = "bolt.chunks/1"
LATENTS_FORMAT = "bolt.latents/1"
KNOWN_FORMATS = (CHUNKS_FORMAT, LATENTS_FORMAT)


@dataclass
class Chunk:
    """One chunk X_n of a document, its context, and (optionally) its latent Z_n.

    ``extra`` holds any further per-chunk fields (E-step scores, candidates) and is
    written back unchanged.
    """

    text: str
    prefix: str = ""
    latent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "prefix": self.prefix}
        if self.latent is not None:
            out["latent"] = self.latent
        out.update(self.extra)
        return out


@dataclass
class Document:
    """A chunked document: joining ``chunk.text`` in order gives back the original."""

    id: str
    chunks: list[Chunk]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(chunk.text for chunk in self.chunks)

    @property
    def has_latents(self) -> bool:
        return all(chunk.latent is not None for chunk in self.chunks)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LATENTS_FORMAT if self.has_latents else CHUNKS_FORMAT,
            "id": self.id,
            "chunks": [chunk.to_json() for chunk in self.chunks],
            "meta": self.meta,
        }


@dataclass
class CorpusDocument:
    """One raw document of an input corpus."""

    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


def require_file(path: str | Path) -> None:
    """A clear error for a path that is missing or a directory."""
    _require_file(Path(path))


def _require_file(path: Path) -> None:
    if not path.exists():
        raise BoltError(f"{path}: no such file. Check the path (relative paths are from {Path.cwd()}).")
    if path.is_dir():
        raise BoltError(f"{path}: is a directory, expected a JSONL or Parquet file.")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; clear errors otherwise."""
    path = Path(path)
    _require_file(path)
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            value = parse_jsonl_line(path, line_number, raw)
            if value is not None:
                yield line_number, value


def is_blank_line(raw: bytes) -> bool:
    """Whether ``iter_jsonl`` skips this line (a line that is not UTF-8 is not blank: reading it says why)."""
    try:
        return not raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


def parse_jsonl_line(path: Path, line_number: int, raw: bytes) -> dict[str, Any] | None:
    """Line ``line_number`` of a JSONL file as its object, None for a blank line; clear errors otherwise."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BoltError(
            f"{path}:{line_number}: not valid UTF-8 (byte {exc.start}). "
            "Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
        ) from None
    if not line.strip():
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BoltError(
            f"{path}:{line_number}: malformed JSON ({exc.msg} at column {exc.colno}). "
            "Each line must be one complete JSON object."
        ) from None
    if not isinstance(value, dict):
        raise BoltError(f"{path}:{line_number}: expected a JSON object, got {type(value).__name__}.")
    return value


def _iter_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a corpus file with a human-readable location for error messages."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        _require_file(path)
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=4096)  # streamed: a large file is never held whole
            row_number = 0
            for batch in batches:
                for row in batch.to_pylist():
                    yield f"{path} row {row_number}", row
                    row_number += 1
        except BoltError:
            raise
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise BoltError(f"{path}: cannot read as Parquet ({exc}).") from None
    elif suffix == ".json":
        _require_file(path)
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BoltError(
                f"{path}: not a UTF-8 JSON array of objects ({exc}). Use JSONL for large corpora."
            ) from None
        if not isinstance(rows, list):
            raise BoltError(f"{path}: a .json corpus must be an array of objects; use .jsonl for one object per line.")
        for row_number, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BoltError(f"{path} item {row_number}: expected an object with a 'text' field.")
            yield f"{path} item {row_number}", row
    else:
        for line_number, row in iter_jsonl(path):
            yield f"{path}:{line_number}", row


HUB_PREFIX = "hf:"
"""A corpus named ``hf:ORG/NAME`` is a Hugging Face dataset, streamed (``iter_hub_corpus``)."""


def is_hub_corpus(source: str | Path) -> bool:
    return str(source).startswith(HUB_PREFIX)


def iter_hub_corpus(
    source: str, text_field: str = "text", config: str | None = None, split: str = "train", revision: str | None = None
) -> Iterator[CorpusDocument]:
    """The documents of a Hugging Face dataset (``hf:ORG/NAME``), streamed row by row (nothing is
    downloaded whole); the same checks as ``iter_corpus``. Ids: the row's ``id``, else ``NAME-<row>``."""
    import datasets

    name = str(source)[len(HUB_PREFIX) :]
    if not name:
        raise BoltError(f"{source!r}: name the dataset after hf:, e.g. hf:HuggingFaceTB/finemath.")
    try:
        rows = datasets.load_dataset(name, config, split=split, streaming=True, revision=revision)
    except Exception as exc:
        raise BoltError(
            f"cannot stream the dataset {name} (config {config or 'default'}, split {split}): "
            f"{type(exc).__name__}: {str(exc)[:200]}. "
            "Check the id, --dataset-config and --split; "
            "offline (HF_DATASETS_OFFLINE=1) only what the cache holds can be read."
        ) from None
    short = name.rsplit("/", 1)[-1]
    numbered = ((f"{name} row {index}", row) for index, row in enumerate(rows))
    yield from _documents(numbered, text_field, f"{name} ({split})", lambda index: f"{short}-{index}", scalar_meta=True)


def read_corpus(path: str | Path, text_field: str = "text") -> list[CorpusDocument]:
    """Read raw documents. Empty documents are skipped with a warning; ids must be unique."""
    return list(iter_corpus(path, text_field))


def iter_corpus(path: str | Path, text_field: str = "text") -> Iterator[CorpusDocument]:
    """``read_corpus`` one document at a time (the same checks, in the same order)."""
    path = Path(path)
    yield from _documents(_iter_rows(path), text_field, str(path), lambda index: f"{path.stem}-{index}")


def _documents(
    rows: Iterator[tuple[str, dict[str, Any]]],
    text_field: str,
    source: str,
    default_id: Callable[[int], str],
    scalar_meta: bool = False,
) -> Iterator[CorpusDocument]:
    """Corpus documents from ``(position, row)`` pairs: the text field checked, empty documents skipped
    with a warning, ids unique (a row's ``id``, else ``default_id(row number)``), the other fields as
    meta (``scalar_meta``: only strings, numbers, booleans and nulls)."""
    count = skipped = 0
    seen: dict[str, str] = {}
    for position, row in rows:
        if text_field not in row:
            raise BoltError(
                f"{position}: no '{text_field}' field (fields: {sorted(row)}). "
                f"Put each document's text under '{text_field}', or pass --text-field NAME."
            )
        text = row[text_field]
        if not isinstance(text, str):
            raise BoltError(f"{position}: '{text_field}' must be a string, got {type(text).__name__}.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BoltError(
                f"{position}: '{text_field}' holds an unpaired surrogate escape "
                f"({text[exc.start]!r} at character {exc.start}), "
                "which is not Unicode text. Fix or drop it in the source data."
            ) from None
        doc_id = str(row["id"]) if row.get("id") is not None else default_id(count + skipped)
        if not text.strip():
            skipped += 1
            continue
        if doc_id in seen:
            raise BoltError(f"{position}: duplicate id {doc_id!r} (first at {seen[doc_id]}). Ids must be unique.")
        seen[doc_id] = position
        meta = {
            key: value
            for key, value in row.items()
            if key not in (text_field, "id")
            and (not scalar_meta or value is None or isinstance(value, (str, int, float, bool)))
        }
        count += 1
        yield CorpusDocument(id=doc_id, text=text, meta=meta)
    if skipped:
        warnings.warn(f"{source}: skipped {skipped} empty document(s).", stacklevel=3)
    if not count:
        raise BoltError(f"{source}: no non-empty documents found.")


def _parse_chunk(position: str, index: int, raw: Any) -> Chunk:
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
        raise BoltError(f"{position} chunk {index}: each chunk must be an object with a string 'text'.")
    prefix = raw.get("prefix", "")
    latent = raw.get("latent")
    if not isinstance(prefix, str) or (latent is not None and not isinstance(latent, str)):
        raise BoltError(f"{position} chunk {index}: 'prefix' and 'latent' must be strings.")
    extra = {key: value for key, value in raw.items() if key not in ("text", "prefix", "latent")}
    return Chunk(text=raw["text"], prefix=prefix, latent=latent, extra=extra)


def read_documents(path: str | Path, require_latents: bool = False) -> list[Document]:
    """Read a ``bolt.chunks/1`` or ``bolt.latents/1`` file."""
    return list(iter_documents(path, require_latents))


def iter_documents(path: str | Path, require_latents: bool = False) -> Iterator[Document]:
    """``read_documents`` one document at a time (the same checks, in the same order); only the ids seen are kept."""
    count = 0
    for _, _, document in iter_documents_at(path, require_latents):
        yield document
        count += 1
    if not count:
        raise BoltError(f"{path}: no documents found.")


def iter_documents_at(
    path: str | Path, require_latents: bool = False, offset: int = 0, line_number: int = 1, ordinal: int = 0
) -> Iterator[tuple[int, int, Document]]:
    """``(byte offset, line number, document)`` of each document of a ``bolt.chunks/1`` file, from the
    line that starts at byte ``offset`` (line ``line_number``, ``ordinal`` documents before it):
    where a shard that reads part of the file seeks to."""
    path = Path(path)
    _require_file(path)
    seen: set[str] = set()
    with open(path, "rb") as handle:
        handle.seek(offset)
        for raw in handle:
            row = parse_jsonl_line(path, line_number, raw)
            if row is not None:
                yield offset, line_number, document_from_row(path, line_number, row, ordinal, require_latents, seen)
                ordinal += 1
            offset += len(raw)
            line_number += 1


@dataclass(frozen=True)
class DocumentRange:
    """Documents ``start`` to ``stop`` (positions) of a ``bolt.chunks/1`` file, read when iterated from
    the byte ``offset`` (line ``line_number``) where document ``start`` begins: a shard's input that
    holds no documents in memory (and pickles small, for a Ray worker that reads the same file)."""

    path: Path
    start: int
    stop: int
    offset: int
    line_number: int

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[Document]:
        documents = iter_documents_at(self.path, offset=self.offset, line_number=self.line_number, ordinal=self.start)
        return (document for _, _, document in itertools.islice(documents, len(self)))


class DocumentScan:
    """One pass over a ``bolt.chunks/1`` file (every check of ``iter_documents``) that keeps, per
    document, where it starts and whether it is still to do (12 bytes each, not the documents),
    to cut the file into shards that seek to their first document."""

    def __init__(self, path: str | Path, limit: int | None = None, finished: Collection[str] = ()):
        self.path = Path(path)
        self.offsets, self.lines, self.todo = array("q"), array("q"), bytearray()
        self.latent_chunks = 0  # chunks that already carry a latent
        for offset, line_number, document in itertools.islice(iter_documents_at(self.path), limit):
            self.offsets.append(offset)
            self.lines.append(line_number)
            self.todo.append(document.id not in finished)
            self.latent_chunks += sum(chunk.latent is not None for chunk in document.chunks)
        if not self.offsets:
            raise BoltError(f"{self.path}: no documents found.")

    def __len__(self) -> int:
        return len(self.offsets)

    def ids(self) -> Iterator[str]:
        """The ids of the scanned documents in file order, read again from the file."""
        return (document.id for _, _, document in itertools.islice(iter_documents_at(self.path), len(self)))

    def shards(self, count: int) -> list[tuple[int, DocumentRange]]:
        """``(shard index, range)`` of the ``count`` contiguous shards that hold a document still to do."""
        ranges = [
            DocumentRange(self.path, r.start, r.stop, self.offsets[r.start], self.lines[r.start])
            for r in split_ranges(len(self), count)
        ]
        return [(index, shard) for index, shard in enumerate(ranges) if any(self.todo[shard.start : shard.stop])]


def split_ranges(count: int, shards: int) -> list[range]:
    """``shards`` contiguous ranges of ``range(count)`` whose sizes differ by at most one (empty ones dropped)."""
    base, extra = divmod(count, shards)
    ranges, start = [], 0
    for index in range(shards):
        size = base + (index < extra)
        ranges.append(range(start, start + size))
        start += size
    return [r for r in ranges if r]


def document_from_row(
    path: Path,
    line_number: int,
    row: dict[str, Any],
    ordinal: int,
    require_latents: bool = False,
    seen: set[str] | None = None,
) -> Document:
    """The document of one line of a ``bolt.chunks/1``/``bolt.latents/1`` file, checked.

    ``ordinal``: how many documents come before it (its default id is ``<file stem>-<ordinal>``).
    ``seen``: the ids so far, where this one is added and a repeat is an error; None leaves
    that check to the caller (``check_new_document_id``).
    """
    position = f"{path}:{line_number}"
    fmt = row.get("format")
    if fmt is not None and fmt not in KNOWN_FORMATS:
        raise BoltError(f"{position}: unknown format {fmt!r}; this bolt reads {', '.join(KNOWN_FORMATS)}.")
    if "chunks" not in row:
        hint = " This looks like a raw corpus: run `bolt chunk` on it first." if "text" in row else ""
        raise BoltError(f"{position}: no 'chunks' field.{hint}")
    if not isinstance(row["chunks"], list) or not row["chunks"]:
        raise BoltError(f"{position}: 'chunks' must be a non-empty list.")
    doc_id = str(row.get("id", f"{path.stem}-{ordinal}"))
    if seen is not None:
        check_new_document_id(seen, position, doc_id)
    chunks = [_parse_chunk(position, index, raw) for index, raw in enumerate(row["chunks"])]
    document = Document(id=doc_id, chunks=chunks, meta=row.get("meta") or {})
    if require_latents and not document.has_latents:
        missing = next(i for i, chunk in enumerate(chunks) if chunk.latent is None)
        raise BoltError(
            f"{position} chunk {missing}: no 'latent'. This stage needs latent data "
            "(from `bolt synthesize` or `bolt estep`); use --layout raw to train on text alone."
        )
    return document


def check_new_document_id(seen: set[str], position: str, doc_id: str) -> None:
    """Add ``doc_id`` to ``seen``; a document id may appear once in a file."""
    if doc_id in seen:
        raise BoltError(f"{position}: duplicate document id {doc_id!r}.")
    seen.add(doc_id)


_HOST = socket.gethostname() or "localhost"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)$")


def writer_tag() -> str:
    """``HOST-PID`` of this process: what a temporary's name says of its writer."""
    return f"{_HOST}-{os.getpid()}"


def temporary_name(name: str, writer: str | None = None) -> str:
    """The name of the temporary file (or directory) of ``name`` written by ``writer`` (default:
    this process): ``.NAME.tmp-HOST-PID``."""
    return f".{name}.tmp-{writer or writer_tag()}"


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is named as a bolt writer's temporary (``.NAME.tmp-...``), whoever wrote it."""
    return _TEMPORARY.match(path.name) is not None


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True  # cannot tell: keep its files
    return True


def is_stale_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary of a writer that no longer exists: its name says which
    process of which machine wrote it (``.NAME.tmp-HOST-PID``, or ``.NAME.tmp-PID`` from older bolt);
    a writer on another machine, or a live one here, keeps its file."""
    match = _TEMPORARY.match(path.name)
    if match is None:
        return False
    host = match["host"]
    if host is not None and host != _HOST:
        return False
    return not process_exists(int(match["pid"]))


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of ``path`` (files or directories beside it named ``.NAME.tmp-...``)
    whose writer process is gone; those of a live writer stay. Returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        if is_stale_temporary(candidate):
            remove_path(candidate)
            removed.append(candidate)
    return removed


def remove_path(path: Path) -> None:
    """Remove a file, a link or a directory tree; nothing if it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries_in(directory: str | Path) -> list[Path]:
    """``remove_stale_temporaries`` for every target in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for candidate in directory.iterdir():
        if is_stale_temporary(candidate):
            remove_path(candidate)
            removed.append(candidate)
    return removed


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') bytes to the disk, where the system allows it."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only on success.

    The temporary is ``.NAME.tmp-HOST-PID``: temporaries a killed writer left beside ``path``
    are removed first (``remove_stale_temporaries``), never those of a live one. The bytes are
    flushed to the disk before the rename, so a crash leaves the old file or the new one whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = path.with_name(temporary_name(path.name))
    try:
        yield temporary
        if temporary.is_file():
            fsync_path(temporary)
        os.replace(temporary, path)
        fsync_path(path.parent)
    finally:
        remove_path(temporary)


def write_jsonl(path: str | Path, rows: Any) -> None:
    """Write dicts (or objects with ``to_json``) as JSONL, atomically."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row.to_json() if hasattr(row, "to_json") else row, ensure_ascii=False))
            handle.write("\n")


def write_json(path: str | Path, value: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _partial_row(line: bytes) -> dict[str, Any] | None:
    """A partial file's record ``{"config_key", "document": {"id", ...}}``, or None where the line is not one."""
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not (
        isinstance(row, dict)
        and isinstance(row.get("config_key"), str)
        and isinstance(row.get("document"), dict)
        and "id" in row["document"]
    ):
        return None
    return row


class PartialDocuments:
    """Documents finished by an interrupted stage, appended one line each as they complete.

    Each line carries a key of the stage's config; lines from another config are ignored,
    and a last line cut by a kill is dropped, so a rerun redoes only unfinished documents.
    The file is read a line at a time. ``done`` maps each finished document's id to its record,
    or to None with ``keep=False`` (a stage that only needs to know what is finished, and reads
    the records back with ``merged_documents`` when it writes its output).
    """

    def __init__(self, path: Path, config_key: str, keep: bool = True):
        self.path = path
        self.config_key = config_key
        self.keep = keep
        self.done: dict[str, dict[str, Any] | None] = {}
        if not path.exists():
            return
        damaged = []
        for number, _offset, line in _lines(path):
            row = _partial_row(line)
            if row is None:
                if line.strip():
                    damaged.append(number)
            elif row["config_key"] == config_key:
                self.done[row["document"]["id"]] = row["document"] if keep else None
        if damaged:
            # A damaged line (not UTF-8, not JSON: a bad disk or an editor) in the middle: drop it,
            # once, and compute its document again, instead of failing every rerun.
            warnings.warn(
                f"{path}: {len(damaged)} damaged line(s) dropped "
                f"(line {damaged[0]}{' and more' if len(damaged) > 1 else ''}: not a UTF-8 JSON record); "
                "their documents are computed again.",
                stacklevel=2,
            )
            with atomic_path(path) as temporary, open(temporary, "wb") as handle:
                for _, _, line in _lines(path):
                    if _partial_row(line) is not None:
                        handle.write(line + b"\n")

    def add(self, document: Document) -> None:
        row = {"config_key": self.config_key, "document": document.to_json()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.done[document.id] = row["document"] if self.keep else None


def _lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, line without its newline) of each complete line of a partial file.

    A last line without its newline was cut by a kill (perhaps inside a character): the file is
    truncated before it, so the next append starts on a line of its own. Lines end at "\n" only:
    JSON escapes it in strings, but not U+2028 or U+0085, which ``str.splitlines`` would also break on.
    """
    offset = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                break
            yield number, offset, line[:-1]
            offset += len(line)
    if offset < path.stat().st_size:
        with open(path, "r+b") as handle:
            handle.truncate(offset)


def shard_partial_paths(directory: Path, shards: int) -> list[Path]:
    """The partial file of each shard of a sharded stage: ``partial.jsonl`` alone, else ``partial-<shard>.jsonl``."""
    if shards == 1:
        return [directory / "partial.jsonl"]
    return [directory / f"partial-{index:04d}.jsonl" for index in range(shards)]


def finished_documents(directory: Path, config_key: str, keep: bool = True) -> dict[str, dict[str, Any] | None]:
    """Every document of config ``config_key`` in the partial files of ``directory``, whatever worker count wrote them
    (with ``keep=False`` the ids only, each mapped to None)."""
    done: dict[str, dict[str, Any] | None] = {}
    for path in sorted(directory.glob("partial*.jsonl")):
        done.update(PartialDocuments(path, config_key, keep).done)
    return done


def merged_documents(directory: Path, config_key: str, ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The records of config ``config_key`` in the partial files of ``directory``, in the order of ``ids``
    (each must have one), read one at a time: only each record's place is held in memory."""
    places: dict[str, tuple[int, int, int]] = {}
    paths = sorted(directory.glob("partial*.jsonl"))
    for file_index, path in enumerate(paths):
        for _, offset, line in _lines(path):
            row = _partial_row(line)
            if row is not None and row["config_key"] == config_key:
                places[row["document"]["id"]] = (file_index, offset, len(line))
    handles = [open(path, "rb") for path in paths]
    try:
        for document_id in ids:
            place = places.get(document_id)
            if place is None:
                raise RuntimeError(f"document {document_id!r} has no record in the partial files of {directory}")
            handle = handles[place[0]]
            handle.seek(place[1])
            yield json.loads(handle.read(place[2]).decode("utf-8"))["document"]
    finally:
        for handle in handles:
            handle.close()


def is_chunked_file(path: str | Path) -> bool:
    """Whether ``path`` holds chunked documents (``bolt.chunks/1`` or ``bolt.latents/1``) rather than a raw corpus."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".json"):
        return False
    first = next(iter_jsonl(path), None)
    return first is not None and "chunks" in first[1]
