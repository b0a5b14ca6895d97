"""The training file tokenised once into flat arrays on disk, memory-mapped by every training process.

``bolt train`` used to read the whole file into Python objects and tokenise it in every
process; at the paper's scale (billions of tokens) that does not fit. A token store holds
the same token ids (``bolt.layouts.tokenize_document`` of every document, so latents from
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
import os
import shutil
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from bolt.errors import BoltError
from bolt.layouts import Layout, TokenizedDocument, encode, rendered_length, tokenize_document
from bolt.records import Chunk, Document, is_chunked_file, iter_corpus, iter_documents
from bolt.rundir import file_sha256
from bolt.special_tokens import MarkerIds

FORMAT = "bolt.tokens/1"
_ARRAYS = ("tokens", "document_chunks", "chunk_text", "chunk_latent", "document_synthetic", "document_ids", "document_id_offsets")
_PROBE = "Tokenizer probe: héllo wörld, 12+30=42. <|START_OF_LATENT|>\n\tx"
_BLOCK = 1024  # documents tokenised between two writes


def source_documents(path: Path, require_latents: bool) -> Iterator[Document]:
    """The documents ``bolt train`` reads, one at a time: chunked/latent files as they are, a plain corpus as one chunk per document."""
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
        return header.get("format") == FORMAT and header.get("source", {}).get("sha256") == self.source_sha256 and header.get("tokenizer", {}).get("fingerprint") == self.tokenizer


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
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.rows, *self.row_shape)}
        start = np.lib.format.magic(1, 0)
        text = repr(header).encode("latin1").ljust(self.HEADER_BYTES - len(start) - 2 - 1) + b"\n"  # NPY 1.0: spaces, then a newline
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


class _Builder:
    """Streams documents into the arrays of one store directory; holds one block of documents at a time."""

    def __init__(self, directory: Path, source: Path, tokenizer):
        self.source = source
        self.tokenizer = tokenizer
        self.dtype = np.dtype("<u2") if len(tokenizer) <= 1 << 16 else np.dtype("<u4")
        shapes = {"chunk_text": (2,), "chunk_latent": (2,), "document_synthetic": (2,)}
        dtypes = {"tokens": self.dtype.str, "document_ids": "<u1"}
        self.writers = {name: _ArrayWriter(directory / f"{name}.npy", dtypes.get(name, "<i8"), shapes.get(name, ())) for name in _ARRAYS}
        self.writers["document_chunks"].append(np.zeros(1))
        self.writers["document_id_offsets"].append(np.zeros(1))
        self.counts = dict(documents=0, chunks=0, tokens=0, id_bytes=0, chunks_without_latent=0, documents_with_synthetic=0, documents_with_synthetic_field=0)

    def add(self, documents: list[Document]) -> None:
        pieces: list[list[int]] = []
        spans: dict[str, list] = {"chunk_text": [], "chunk_latent": [], "document_synthetic": [], "document_chunks": [], "document_id_offsets": []}
        ids: list[bytes] = []
        position, counts = self.counts["tokens"], self.counts
        for document in documents:
            tokenized = tokenize_document(self.tokenizer, document, with_latents=True)
            for chunk, text, latent in zip(document.chunks, tokenized.texts, tokenized.latents):
                spans["chunk_text"].append((position, position + len(text)))
                position += len(text)
                if chunk.latent is None and not latent:
                    spans["chunk_latent"].append((-1, -1))
                else:
                    spans["chunk_latent"].append((position, position + len(latent)))
                    position += len(latent)
                pieces += [text, latent]
                counts["chunks_without_latent"] += chunk.latent is None
            if tokenized.synthetic is None:
                spans["document_synthetic"].append((-1, -1))
            else:
                spans["document_synthetic"].append((position, position + len(tokenized.synthetic)))
                position += len(tokenized.synthetic)
                pieces.append(tokenized.synthetic)
                counts["documents_with_synthetic"] += 1
            counts["documents_with_synthetic_field"] += "synthetic" in document.meta
            counts["chunks"] += len(document.chunks)
            spans["document_chunks"].append(counts["chunks"])
            ids.append(document.id.encode("utf-8"))
            counts["id_bytes"] += len(ids[-1])
            spans["document_id_offsets"].append(counts["id_bytes"])
        self.writers["tokens"].append(self._token_array(pieces, position - counts["tokens"], documents))
        for name, values in spans.items():
            self.writers[name].append(np.array(values, dtype=np.int64))
        self.writers["document_ids"].append(np.frombuffer(b"".join(ids), dtype=np.uint8))
        counts["tokens"] = position
        counts["documents"] += len(documents)

    def _token_array(self, pieces: list[list[int]], count: int, documents: list[Document]) -> np.ndarray:
        try:
            tokens = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64, count=count)
        except (TypeError, ValueError, OverflowError):
            tokens = None
        limit = np.iinfo(self.dtype).max
        if tokens is None or (tokens.size and (tokens.min() < 0 or tokens.max() > limit)):
            raise BoltError(
                f"{self.source}: a 'latent_token_ids' list among documents {documents[0].id!r}..{documents[-1].id!r} holds something other "
                f"than token ids in [0, {limit}] of this tokenizer ({len(self.tokenizer)} ids). Use the latents of an E-step run with this model's tokenizer."
            )
        return tokens

    def finish(self) -> dict:
        for writer in self.writers.values():
            writer.close()
        counts = {key: value for key, value in self.counts.items() if key != "id_bytes"}
        return {**counts, "dtype": self.dtype.name}


def build_token_store(source: Path, tokenizer, directory: Path, key: StoreKey, require_latents: bool = False) -> TokenStore:
    """Tokenise ``source`` into a store at ``directory`` (replacing a stale one), streaming: one block of documents in memory."""
    source, directory = Path(source), Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        builder = _Builder(temporary, source, tokenizer)
        documents = source_documents(source, require_latents)
        with tqdm(total=_expected_documents(source), desc="tokenize", unit="doc", disable=None) as progress:
            for block in iter(lambda: list(itertools.islice(documents, _BLOCK)), []):
                builder.add(block)
                progress.update(len(block))
        header = {
            "format": FORMAT,
            "source": {"path": str(source), "sha256": key.source_sha256, "kind": "chunks" if is_chunked_file(source) else "corpus"},
            "tokenizer": {"fingerprint": key.tokenizer, "class": type(tokenizer).__name__, "vocab_size": len(tokenizer)},
            **builder.finish(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (temporary / "header.json").write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")
        _install(temporary, directory, key)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return TokenStore.open(directory)


def _install(temporary: Path, directory: Path, key: StoreKey) -> None:
    """Rename the finished store into place; a matching store installed meanwhile (another run sharing the cache) is kept."""
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


def open_token_store(source: Path, tokenizer, directory: Path, key: StoreKey | None = None, *, build: bool = True,
                     require_latents: bool = False, poll_seconds: float = 2.0) -> TokenStore:
    """The store of ``source`` at ``directory``: opened if it matches, else built (``build``) or waited for.

    Several processes: one builds (``build=True``), the others poll the directory until a
    matching store appears (no collective call, so a build of hours cannot time one out;
    a launcher stops them if the builder fails). ``require_latents``: every chunk must have
    a latent; a store built by a raw run is checked again against the source, which names
    the file and line of the first chunk without one.
    """
    source, directory = Path(source), Path(directory)
    key = key or StoreKey.of(source, tokenizer)
    if _read_matching_header(directory, key) is not None:
        store = TokenStore.open(directory)
    elif build:
        shutil.rmtree(directory, ignore_errors=True)  # stale: another source or tokenizer
        store = build_token_store(source, tokenizer, directory, key, require_latents)
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
            raise BoltError(f"{directory}: not a {FORMAT} token store (format {header.get('format')!r}). Delete it; `bolt train` rebuilds it.")
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
            latents=[self._ids(start, end) for start, end in self.chunk_latent[first:last].tolist()] if with_latents else None,
            synthetic=self._ids(synthetic_start, synthetic_end) if synthetic_start >= 0 else None,
        )

    def documents(self, with_latents: bool) -> StoredDocuments:
        return StoredDocuments(self, with_latents)

    def with_latents(self, layout: Layout) -> bool:
        """Whether training in ``layout`` tokenises latents: all but raw, and pure unless every document has ``meta.synthetic``."""
        all_synthetic = self.header["documents_with_synthetic_field"] == self.header["documents"]
        return layout.needs_latents and not (layout is Layout.PURE and all_synthetic)

    def tokens_per_epoch(self, layout: Layout, markers: MarkerIds, seed: int, raw_ratio: float = 0.0, block: int = 1 << 16) -> int:
        """Tokens of one epoch rendered with the coins of epoch 0 (``[seed, 0, i]``), from the offsets alone."""
        with_latents = self.with_latents(layout)
        coins = raw_ratio > 0 or layout is Layout.RANDOM
        chunk_offsets = self.document_chunks
        text_sums = np.concatenate([[0], np.cumsum(np.diff(self.chunk_text, axis=1)[:, 0])])
        latent_sums = np.concatenate([[0], np.cumsum(np.diff(self.chunk_latent, axis=1)[:, 0])])
        total = 0
        for start in range(0, len(self), block):
            end = min(start + block, len(self))
            first, last = chunk_offsets[start:end], chunk_offsets[start + 1 : end + 1]
            chunks = (last - first).tolist()
            texts = (text_sums[last] - text_sums[first]).tolist()
            latents = (latent_sums[last] - latent_sums[first]).tolist()
            spans = self.document_synthetic[start:end]
            synthetic = np.where(spans[:, 0] >= 0, spans[:, 1] - spans[:, 0], -1).tolist()
            for offset, (n_chunks, n_text, n_latent, n_synthetic) in enumerate(zip(chunks, texts, latents, synthetic)):
                index = start + offset
                rng = np.random.default_rng([seed, 0, index]) if coins else None
                total += rendered_length(  # the id only names a document without latents in an error
                    self.document_id(index) if not with_latents else "", n_chunks, n_text, n_latent if with_latents else None,
                    n_synthetic if n_synthetic >= 0 else None, layout, markers, rng, raw_ratio,
                )
        return total


class StoredDocuments(Sequence):
    """The store's documents as ``TokenizedDocument``s, read from the maps when indexed (what ``window_stream`` takes)."""

    def __init__(self, store: TokenStore, with_latents: bool):
        self.store = store
        self.with_latents = with_latents

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> TokenizedDocument:
        return self.store.document(int(index), self.with_latents)
