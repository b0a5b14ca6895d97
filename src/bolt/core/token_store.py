"""The training file tokenised once into flat arrays on disk, memory-mapped by every training process.

Reading the whole file into Python objects and tokenising it in every process does not fit at
the paper's scale (billions of tokens). A token store holds the same token ids
(``bolt.core.layouts.tokenize_document`` of every document, so latents from
``latent_token_ids`` and ``meta.synthetic`` included) in numpy arrays that
``np.load(mmap_mode="r")`` opens: a process holds the offset tables' pages it touches and
the tokens of the documents it renders, nothing else. The format is ``bolt.tokens/1``
(docs/FORMATS.md)::

    header.json              format, the source's sha256, the tokenizer's fingerprint, counts
    tokens.npy               every token id, uint16 (vocabularies up to 65,536) or uint32
    document_chunks.npy      int64 (D+1,): document i owns chunks [d[i], d[i+1])
    chunk_text.npy           int64 (C, 2): [start, end) of each chunk's text in tokens
    chunk_latent.npy         int64 (C, 2): the latent's span; (-1, -1) with no latent at all
    document_synthetic.npy   int64 (D, 2): meta.synthetic's span; (-1, -1) when it has none
    document_ids.npy         uint8: the UTF-8 document ids, back to back
    document_id_offsets.npy  int64 (D+1,): id i is document_ids[o[i]:o[i+1]]

A store is built in a temporary directory beside its place and renamed into it when
complete, so a reader sees a whole store or none. It is reused while the source file's
sha256 and the tokenizer's fingerprint match its header, and rebuilt otherwise.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import struct
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bolt.core.layouts import Layout, TokenizedDocument, encode, rendered_length, tokenize_document
from bolt.core.progress import progress_bar
from bolt.core.records import (
    Chunk,
    Document,
    check_new_document_id,
    document_from_row,
    is_blank_line,
    is_chunked_file,
    iter_corpus,
    iter_documents,
    parse_jsonl_line,
    remove_stale_temporaries,
    temporary_name,
)
from bolt.core.rundir import file_sha256
from bolt.core.special_tokens import MarkerIds
from bolt.errors import BoltError

FORMAT = "bolt.tokens/1"
_ARRAYS = (
    "tokens",
    "document_chunks",
    "chunk_text",
    "chunk_latent",
    "document_synthetic",
    "document_ids",
    "document_id_offsets",
)
_PROBE = "Tokenizer probe: héllo wörld, 12+30=42. <|START_OF_LATENT|>\n\tx"
_BLOCK = 1024  # documents tokenised between two writes


def source_documents(path: Path, require_latents: bool) -> Iterator[Document]:
    """The documents ``bolt train`` reads, one at a time: chunked/latent files as they are, a plain corpus as one
    chunk per document."""
    if is_chunked_file(path):
        yield from iter_documents(path, require_latents=require_latents)
    else:
        for doc in iter_corpus(path):
            yield Document(id=doc.id, chunks=[Chunk(text=doc.text)], meta=doc.meta)


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides ``encode``: the fast tokenizer's full description (vocabulary, merges, added
    tokens, normalisation; truncation and padding left out), else the vocabulary, plus the ids of a probe text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        description = json.loads(backend.to_str())
        description.pop("truncation", None)
        description.pop("padding", None)
    else:
        description = [type(tokenizer).__name__, sorted(tokenizer.get_vocab().items())]
    blob = json.dumps({"tokenizer": description, "probe": encode(tokenizer, _PROBE)}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoreKey:
    """What a store was built from: it is reused only for the same source bytes and the same tokenizer."""

    source_sha256: str
    tokenizer: str

    @classmethod
    def of(cls, source: Path, tokenizer) -> StoreKey:
        return cls(file_sha256(source), tokenizer_fingerprint(tokenizer))

    @property
    def name(self) -> str:
        """The store's directory name in a cache shared by runs."""
        return f"{self.source_sha256[:16]}-{self.tokenizer[:16]}"

    def matches(self, header: dict) -> bool:
        return (
            header.get("format") == FORMAT
            and header.get("source", {}).get("sha256") == self.source_sha256
            and header.get("tokenizer", {}).get("fingerprint") == self.tokenizer
        )


class _ArrayWriter:
    """A ``.npy`` file written in pieces: 128 bytes are reserved for the header, written last with the final shape."""

    HEADER_BYTES = 128

    def __init__(self, path: Path, dtype: str, row_shape: tuple[int, ...] = ()):
        self.dtype = np.dtype(dtype)
        self.row_shape = row_shape
        self.rows = 0
        self.handle = open(path, "wb")
        self.handle.write(bytes(self.HEADER_BYTES))

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1, *self.row_shape)
        self.handle.write(values.tobytes())
        self.rows += len(values)

    def close(self) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, *self.row_shape),
        }
        start = np.lib.format.magic(1, 0)
        text = (
            repr(header).encode("latin1").ljust(self.HEADER_BYTES - len(start) - 2 - 1) + b"\n"
        )  # NPY 1.0: spaces, then a newline
        self.handle.seek(0)
        self.handle.write(start + struct.pack("<H", len(text)) + text)
        self.handle.close()


def _expected_documents(path: Path) -> int | None:
    """Lines of a JSONL file, rows of a Parquet file: the progress bar's total (blank lines included)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # a broken file: reading it will say why
            return None
    if suffix == ".json":
        return None
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 24), b""))


@dataclass
class _Block:
    """Documents tokenised together; spans count from the block's first token, -1 kept for "none"."""

    tokens: np.ndarray
    chunk_text: np.ndarray
    chunk_latent: np.ndarray
    document_synthetic: np.ndarray
    chunks_per_document: np.ndarray
    document_ids: bytes
    id_lengths: np.ndarray
    counts: dict[str, int]


def _tokenize_block(tokenizer, dtype: np.dtype, source: Path, documents: list[Document]) -> _Block:
    """``tokenize_document`` of each document (latents and synthetic included), packed into flat arrays."""
    pieces: list[list[int]] = []
    text_spans, latent_spans, synthetic_spans = [], [], []
    position = 0
    counts = dict(
        documents=len(documents), chunks_without_latent=0, documents_with_synthetic=0, documents_with_synthetic_field=0
    )
    for document in documents:
        tokenized = tokenize_document(tokenizer, document, with_latents=True)
        for chunk, text, latent in zip(document.chunks, tokenized.texts, tokenized.latents):
            text_spans.append((position, position + len(text)))
            position += len(text)
            if chunk.latent is None and not latent:
                latent_spans.append((-1, -1))
            else:
                latent_spans.append((position, position + len(latent)))
                position += len(latent)
            pieces += [text, latent]
            counts["chunks_without_latent"] += chunk.latent is None
        if tokenized.synthetic is None:
            synthetic_spans.append((-1, -1))
        else:
            synthetic_spans.append((position, position + len(tokenized.synthetic)))
            position += len(tokenized.synthetic)
            pieces.append(tokenized.synthetic)
            counts["documents_with_synthetic"] += 1
        counts["documents_with_synthetic_field"] += "synthetic" in document.meta
    ids = [document.id.encode("utf-8") for document in documents]
    return _Block(
        tokens=_token_array(pieces, position, dtype, source, documents, len(tokenizer)),
        chunk_text=np.array(text_spans, dtype=np.int64).reshape(-1, 2),
        chunk_latent=np.array(latent_spans, dtype=np.int64).reshape(-1, 2),
        document_synthetic=np.array(synthetic_spans, dtype=np.int64).reshape(-1, 2),
        chunks_per_document=np.array([len(document.chunks) for document in documents], dtype=np.int64),
        document_ids=b"".join(ids),
        id_lengths=np.array([len(i) for i in ids], dtype=np.int64),
        counts=counts,
    )


def _token_array(
    pieces: list[list[int]], count: int, dtype: np.dtype, source: Path, documents: list[Document], vocabulary: int
) -> np.ndarray:
    try:
        tokens = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64, count=count)
    except (TypeError, ValueError, OverflowError):
        tokens = None
    limit = np.iinfo(dtype).max
    if tokens is None or (tokens.size and (tokens.min() < 0 or tokens.max() > limit)):
        raise BoltError(
            f"{source}: a 'latent_token_ids' list among documents {documents[0].id!r}..{documents[-1].id!r} "
            f"holds something other than token ids in [0, {limit}] of this tokenizer ({vocabulary} ids). "
            "Use the latents of an E-step run with this model's tokenizer."
        )
    return tokens.astype(dtype)


_WORKER: tuple = ()


def _start_worker(tokenizer, dtype: np.dtype, source: Path, require_latents: bool) -> None:
    global _WORKER
    _WORKER = (tokenizer, dtype, source, require_latents)


def _tokenize_lines(
    lines: list[tuple[int, bytes]], first_ordinal: int
) -> tuple[_Block, list[tuple[int, str]], BoltError | None]:
    """In a worker: read non-blank lines as the reader does (its checks, but for repeated ids) and tokenise them.

    Returns the block of the documents before the first bad line, their line numbers and
    ids (for the repeated-id check, done in order by the main process) and that line's error.
    """
    tokenizer, dtype, source, require_latents = _WORKER
    documents, positions, error = [], [], None
    try:
        for ordinal, (line_number, raw) in enumerate(lines, start=first_ordinal):
            document = document_from_row(
                source, line_number, parse_jsonl_line(source, line_number, raw), ordinal, require_latents
            )
            documents.append(document)
            positions.append((line_number, document.id))
    except BoltError as exc:
        error = exc
    return _tokenize_block(tokenizer, dtype, source, documents), positions, error


def _line_blocks(source: Path) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """Blocks of ``_BLOCK`` non-blank ``(line number, line)``, each with the number of documents before it."""
    block: list[tuple[int, bytes]] = []
    before = 0
    with open(source, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if is_blank_line(raw):
                continue
            block.append((line_number, raw))
            if len(block) == _BLOCK:
                yield block, before
                before += len(block)
                block = []
    if block:
        yield block, before


def _tokenized_blocks(
    source: Path, require_latents: bool, tokenizer, dtype: np.dtype, workers: int
) -> Iterator[_Block]:
    """The source's documents in tokenised blocks of ``_BLOCK``, in order.

    One process: the reader, then ``_tokenize_block``. Several (chunked/latent JSONL only):
    this process cuts the file into blocks of lines, ``workers`` processes read and tokenise
    them, at most ``2 x workers`` blocks in flight; repeated ids are checked here, in order.
    """
    if workers <= 1 or not is_chunked_file(source):
        documents = source_documents(source, require_latents)
        for block in iter(lambda: list(itertools.islice(documents, _BLOCK)), []):
            yield _tokenize_block(tokenizer, dtype, source, block)
        return
    seen: set[str] = set()

    def checked(result) -> _Block:
        block, positions, error = result.get()
        for line_number, doc_id in positions:
            check_new_document_id(seen, f"{source}:{line_number}", doc_id)
        if error is not None:
            raise error
        return block

    # spawn, not fork: the caller may hold torch's threads and a process group.
    with multiprocessing.get_context("spawn").Pool(
        workers, initializer=_start_worker, initargs=(tokenizer, dtype, source, require_latents)
    ) as pool:
        pending: deque = deque()
        for lines, before in _line_blocks(source):
            pending.append(pool.apply_async(_tokenize_lines, (lines, before)))
            if len(pending) > 2 * workers:
                yield checked(pending.popleft())
        while pending:
            yield checked(pending.popleft())
    if not seen:
        for _ in iter_documents(source):  # a file without documents: the reader's error
            pass


class _Writer:
    """Appends blocks to the arrays of one store directory, moving their spans to absolute positions."""

    def __init__(self, directory: Path, dtype: np.dtype):
        self.dtype = dtype
        shapes = {"chunk_text": (2,), "chunk_latent": (2,), "document_synthetic": (2,)}
        dtypes = {"tokens": dtype.str, "document_ids": "<u1"}
        self.arrays = {
            name: _ArrayWriter(directory / f"{name}.npy", dtypes.get(name, "<i8"), shapes.get(name, ()))
            for name in _ARRAYS
        }
        self.arrays["document_chunks"].append(np.zeros(1))
        self.arrays["document_id_offsets"].append(np.zeros(1))
        self.counts = dict(
            documents=0,
            chunks=0,
            tokens=0,
            chunks_without_latent=0,
            documents_with_synthetic=0,
            documents_with_synthetic_field=0,
        )
        self.id_bytes = 0

    def write(self, block: _Block) -> None:
        for name in ("chunk_text", "chunk_latent", "document_synthetic"):
            spans = getattr(block, name)
            self.arrays[name].append(np.where(spans >= 0, spans + self.counts["tokens"], -1))
        self.arrays["tokens"].append(block.tokens)
        self.arrays["document_chunks"].append(self.counts["chunks"] + np.cumsum(block.chunks_per_document))
        self.arrays["document_ids"].append(np.frombuffer(block.document_ids, dtype=np.uint8))
        self.arrays["document_id_offsets"].append(self.id_bytes + np.cumsum(block.id_lengths))
        self.id_bytes += len(block.document_ids)
        self.counts["tokens"] += len(block.tokens)
        self.counts["chunks"] += len(block.chunk_text)
        for key, value in block.counts.items():
            self.counts[key] += value

    def finish(self) -> dict:
        for array in self.arrays.values():
            array.close()
        return {**self.counts, "dtype": self.dtype.name}


def build_token_store(
    source: Path, tokenizer, directory: Path, key: StoreKey, require_latents: bool = False, workers: int = 1
) -> TokenStore:
    """Tokenise ``source`` into a store at ``directory``, streaming: a few blocks of documents in memory at a time.

    ``workers``: processes that read and tokenise a chunked/latent file (a plain corpus is
    read in this process). Starting them takes time, and they pay off only where there are cores
    to spare (docs/SCALING.md gives the times), so the default is 1. They are spawned: a script
    that asks for them needs the usual ``if __name__ == "__main__":``.
    """
    source, directory = Path(source), Path(directory)
    dtype = np.dtype("<u2") if len(tokenizer) <= 1 << 16 else np.dtype("<u4")
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory)  # those of killed builders; a live one's stay
    temporary = directory.with_name(temporary_name(directory.name))  # unique on a shared filesystem
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        writer = _Writer(temporary, dtype)
        with progress_bar(total=_expected_documents(source), desc="tokenize", unit="doc", disable=None) as progress:
            for block in _tokenized_blocks(source, require_latents, tokenizer, dtype, workers):
                writer.write(block)
                progress.update(len(block.chunks_per_document))
        header = {
            "format": FORMAT,
            "source": {
                "path": str(source),
                "sha256": key.source_sha256,
                "kind": "chunks" if is_chunked_file(source) else "corpus",
            },
            "tokenizer": {
                "fingerprint": key.tokenizer,
                "class": type(tokenizer).__name__,
                "vocab_size": len(tokenizer),
            },
            **writer.finish(),
            "workers": workers,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (temporary / "header.json").write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")
        _install(temporary, directory, key)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return TokenStore.open(directory)


def _install(temporary: Path, directory: Path, key: StoreKey) -> None:
    """Rename the finished store into place; a matching store installed meanwhile (another run sharing the cache)
    is kept."""
    try:
        os.rename(temporary, directory)
        return
    except OSError:
        if _read_matching_header(directory, key) is not None:
            return
    shutil.rmtree(directory, ignore_errors=True)
    os.rename(temporary, directory)


def _read_matching_header(directory: Path, key: StoreKey) -> dict | None:
    try:
        header = json.loads((directory / "header.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return header if key.matches(header) else None


def open_token_store(
    source: Path,
    tokenizer,
    directory: Path,
    key: StoreKey | None = None,
    *,
    build: bool = True,
    require_latents: bool = False,
    workers: int = 1,
    poll_seconds: float = 2.0,
) -> TokenStore:
    """The store of ``source`` at ``directory``: opened if it matches, else built (``build``) or waited for.

    Several processes: one builds (``build=True``), the others poll the directory until a
    matching store appears (no collective call, so a build of hours cannot time one out;
    a launcher stops them if the builder fails). ``workers``: see ``build_token_store``.
    ``require_latents``: every chunk must have
    a latent; a store built by a raw run is checked again against the source, which names
    the file and line of the first chunk without one.
    """
    source, directory = Path(source), Path(directory)
    key = key or StoreKey.of(source, tokenizer)
    if _read_matching_header(directory, key) is not None:
        store = TokenStore.open(directory)
    elif build:
        shutil.rmtree(directory, ignore_errors=True)  # stale: another source or tokenizer
        store = build_token_store(source, tokenizer, directory, key, require_latents, workers)
    else:
        print(f"waiting for the main process to build the token store {directory} ...", file=sys.stderr, flush=True)
        while _read_matching_header(directory, key) is None:
            time.sleep(poll_seconds)
        store = TokenStore.open(directory)
    if require_latents and store.header["chunks_without_latent"]:
        for _ in iter_documents(source, require_latents=True):  # raises read_documents' error for the first such chunk
            pass
    return store


class TokenStore:
    """An opened store: memory-mapped arrays, and documents rendered from them on demand."""

    def __init__(self, directory: Path, header: dict, arrays: dict[str, np.ndarray]):
        self.directory = directory
        self.header = header
        self.tokens = arrays["tokens"]
        self.document_chunks = arrays["document_chunks"]
        self.chunk_text = arrays["chunk_text"]
        self.chunk_latent = arrays["chunk_latent"]
        self.document_synthetic = arrays["document_synthetic"]
        self.document_ids = arrays["document_ids"]
        self.document_id_offsets = arrays["document_id_offsets"]

    @classmethod
    def open(cls, directory: str | Path) -> TokenStore:
        directory = Path(directory)
        header = json.loads((directory / "header.json").read_text(encoding="utf-8"))
        if header.get("format") != FORMAT:
            raise BoltError(
                f"{directory}: not a {FORMAT} token store (format {header.get('format')!r}). "
                "Delete it; `bolt train` rebuilds it."
            )
        # np.asarray: plain array views of the maps (no copy), cheaper to slice than np.memmap.
        arrays = {name: np.asarray(np.load(directory / f"{name}.npy", mmap_mode="r")) for name in _ARRAYS}
        return cls(directory, header, arrays)

    def __len__(self) -> int:
        return len(self.document_synthetic)

    def document_id(self, index: int) -> str:
        start, end = self.document_id_offsets[index : index + 2].tolist()
        return bytes(self.document_ids[start:end]).decode("utf-8")

    def _ids(self, start: int, end: int) -> list[int]:
        return self.tokens[start:end].tolist() if start >= 0 else []

    def document(self, index: int, with_latents: bool) -> TokenizedDocument:
        """Document ``index`` as ``tokenize_document(tokenizer, document, with_latents)`` gave it."""
        first, last = self.document_chunks[index : index + 2].tolist()
        synthetic_start, synthetic_end = self.document_synthetic[index].tolist()
        return TokenizedDocument(
            id=self.document_id(index),
            texts=[self._ids(start, end) for start, end in self.chunk_text[first:last].tolist()],
            latents=[self._ids(start, end) for start, end in self.chunk_latent[first:last].tolist()]
            if with_latents
            else None,
            synthetic=self._ids(synthetic_start, synthetic_end) if synthetic_start >= 0 else None,
        )

    def documents(self, with_latents: bool) -> StoredDocuments:
        return StoredDocuments(self, with_latents)

    def with_latents(self, layout: Layout) -> bool:
        """Whether training in ``layout`` tokenises latents: all but raw, and pure unless every document has
        ``meta.synthetic``."""
        all_synthetic = self.header["documents_with_synthetic_field"] == self.header["documents"]
        return layout.needs_latents and not (layout is Layout.PURE and all_synthetic)

    def tokens_per_epoch(
        self, layout: Layout, markers: MarkerIds, seed: int, raw_ratio: float = 0.0, block: int = 1 << 16
    ) -> int:
        """Tokens of one epoch rendered with the coins of epoch 0 (``[seed, 0, i]``), from the offsets alone.

        Reads the offset tables a block of documents at a time (no array as long as the
        corpus is made), and draws coins only where ``render`` would.
        """
        with_latents = self.with_latents(layout)
        coins = raw_ratio > 0 or layout is Layout.RANDOM
        total = 0
        for start in range(0, len(self), block):
            end = min(start + block, len(self))
            chunk_offsets = self.document_chunks[start : end + 1]
            first_chunk = chunk_offsets[0]
            starts = chunk_offsets[:-1] - first_chunk  # every document has a chunk, so reduceat sums each one's
            texts = np.add.reduceat(
                np.diff(self.chunk_text[first_chunk : chunk_offsets[-1]], axis=1)[:, 0], starts
            ).tolist()
            latents = np.add.reduceat(
                np.diff(self.chunk_latent[first_chunk : chunk_offsets[-1]], axis=1)[:, 0], starts
            ).tolist()
            spans = self.document_synthetic[start:end]
            synthetic = np.where(spans[:, 0] >= 0, spans[:, 1] - spans[:, 0], -1).tolist()
            chunks = np.diff(chunk_offsets).tolist()
            for offset, (n_chunks, n_text, n_latent, n_synthetic) in enumerate(zip(chunks, texts, latents, synthetic)):
                index = start + offset
                rng = np.random.default_rng([seed, 0, index]) if coins else None
                total += rendered_length(  # the id only names a document without latents in an error
                    self.document_id(index) if not with_latents else "",
                    n_chunks,
                    n_text,
                    n_latent if with_latents else None,
                    n_synthetic if n_synthetic >= 0 else None,
                    layout,
                    markers,
                    rng,
                    raw_ratio,
                )
        return total


class StoredDocuments(Sequence):
    """The store's documents as ``TokenizedDocument``s, read from the maps when indexed (what ``window_stream``
    takes)."""

    def __init__(self, store: TokenStore, with_latents: bool):
        self.store = store
        self.with_latents = with_latents

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> TokenizedDocument:
        return self.store.document(int(index), self.with_latents)
