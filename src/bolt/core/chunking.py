"""Stage 1: split documents into chunks of sentence units (docs/METHOD.md, "Chunks and latents").

Units are sentences: paragraphs are split on blank lines, then sentences are found
with nupunkt's pretrained Punkt model (offline; no download at run time). Whitespace
between units opens the following unit, so ``"".join(units)`` is the document byte
for byte, and a chunk starts the way its first word is tokenised in context by
byte-level BPE tokenizers (" The", not "The").

A chunk holds ``1 + Poisson(mean_units - 1)`` units (capped at ``max_units`` and at what
remains), drawn from an RNG seeded by a hash of the document text and ``seed``: the
same document always chunks the same way, wherever it appears in a corpus.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bolt.core.progress import progress_bar
from bolt.core.records import Chunk, CorpusDocument, Document, is_hub_corpus, iter_corpus, iter_hub_corpus, write_jsonl
from bolt.core.rundir import run_dir_for_file, run_stage
from bolt.errors import BoltError

_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")


@dataclass
class ChunkConfig:
    """How documents are cut into chunks."""

    mean_units: float = 8.0
    """Mean sentences per chunk: 1 + Poisson(mean_units - 1) units (the paper: 8)."""
    max_units: int = 20
    """Cap on sentences per chunk."""
    uniform: bool = False
    """Every chunk gets exactly --mean-units sentences (evaluation's uniform chunking)."""
    prefix_chunks: int = 1
    """Previous chunks in each prefix: 1 for teacher latents, 3 for the E-step, -1 for all previous text
    (likelihood evaluation)."""
    seed: int = 0
    """Mixed with a hash of each document's text to seed its chunk lengths."""

    def validate(self) -> None:
        if not (1 <= self.mean_units < float("inf")):  # also refuses nan
            raise BoltError(f"--mean-units must be a finite number of at least 1, got {self.mean_units}.")
        if self.max_units < 1:
            raise BoltError(f"--max-units must be at least 1, got {self.max_units}.")
        if self.prefix_chunks < -1:
            raise BoltError(f"--prefix-chunks must be -1 (all previous text) or >= 0, got {self.prefix_chunks}.")
        if self.seed < 0:
            raise BoltError(f"--seed must be >= 0 (it seeds numpy's generator), got {self.seed}.")


def split_units(text: str) -> list[str]:
    """Sentence units whose concatenation is exactly ``text``."""
    import nupunkt

    boundaries: set[int] = {0}
    paragraph_start = 0
    for separator in list(_BLANK_LINE.finditer(text)) + [None]:
        paragraph_end = separator.start() if separator else len(text)
        for _, span_end in nupunkt.sent_spans(text[paragraph_start:paragraph_end]):
            # Cut right after the sentence's last visible character, so the whitespace
            # between sentences opens the next unit.
            end = paragraph_start + span_end
            while end > paragraph_start and text[end - 1].isspace():
                end -= 1
            boundaries.add(end)
        if separator is None:
            break
        paragraph_start = separator.end()
    cuts = sorted(b for b in boundaries if 0 < b < len(text))
    units = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    # A piece that is only whitespace (leading or trailing blank lines) joins its neighbour.
    merged: list[str] = []
    for unit in units:
        if merged and (not unit.strip() or not merged[-1].strip()):
            merged[-1] += unit
        else:
            merged.append(unit)
    return merged


def document_rng(text: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return np.random.default_rng([int.from_bytes(digest[:8], "little"), seed])


def chunk_lengths(n_units: int, config: ChunkConfig, rng: np.random.Generator) -> list[int]:
    lengths = []
    remaining = n_units
    while remaining > 0:
        if config.uniform:
            length = max(1, round(config.mean_units))
        else:
            length = 1 + int(rng.poisson(config.mean_units - 1))
        length = min(length, config.max_units, remaining)
        lengths.append(length)
        remaining -= length
    return lengths


def with_prefixes(texts: list[str], prefix_chunks: int) -> list[Chunk]:
    """Chunks whose prefix is the raw text of the previous ``prefix_chunks`` chunks (-1: all)."""
    chunks = []
    for index, text in enumerate(texts):
        first = 0 if prefix_chunks < 0 else max(0, index - prefix_chunks)
        chunks.append(Chunk(text=text, prefix="".join(texts[first:index])))
    return chunks


def with_new_prefixes(document: Document, prefix_chunks: int) -> Document:
    """``document`` with the same chunks, each prefix rebuilt from the previous ``prefix_chunks`` chunks (-1: all)."""
    return Document(
        id=document.id, chunks=with_prefixes([c.text for c in document.chunks], prefix_chunks), meta=document.meta
    )


def chunk_document(document: CorpusDocument, config: ChunkConfig) -> Document:
    units = split_units(document.text)
    rng = document_rng(document.text, config.seed)
    texts = []
    position = 0
    for length in chunk_lengths(len(units), config, rng):
        texts.append("".join(units[position : position + length]))
        position += length
    return Document(id=document.id, chunks=with_prefixes(texts, config.prefix_chunks), meta=document.meta)


@dataclass
class HubSource:
    """Where ``bolt chunk`` streams a Hugging Face dataset from (``hf:ORG/NAME``)."""

    config: str | None = None
    split: str = "train"
    revision: str | None = None


def chunk_stage(
    input_path: Path | str,
    output_path: Path,
    config: ChunkConfig,
    text_field: str = "text",
    overwrite: bool | None = None,
    hub: HubSource | None = None,
    limit: int | None = None,
) -> dict[str, int]:
    """``bolt chunk``: a corpus file, or a Hugging Face dataset ``hf:ORG/NAME`` (streamed; ``hub``
    says which config, split and revision), to ``bolt.chunks/1`` at ``output_path``, written
    atomically as the documents stream through (memory does not grow with the corpus).
    ``limit``: only the first N documents. ``overwrite``: replace an output of another config
    (``bolt.core.rundir.RunDir.claim``)."""
    config.validate()
    if limit is not None and limit < 1:
        raise BoltError(f"--limit must be at least 1, got {limit}.")
    from_hub = is_hub_corpus(input_path)
    hub = hub or HubSource()

    def work(run) -> dict[str, int]:
        corpus = (
            iter_hub_corpus(str(input_path), text_field, hub.config, hub.split, hub.revision)
            if from_hub
            else iter_corpus(input_path, text_field=text_field)
        )
        counts = {"documents": 0, "chunks": 0}

        def documents():
            for document in progress_bar(itertools.islice(corpus, limit), desc="chunk", unit="doc", disable=None):
                chunked = chunk_document(document, config)
                counts["documents"] += 1
                counts["chunks"] += len(chunked.chunks)
                yield chunked

        write_jsonl(output_path, documents())
        return counts

    stage_config = {"input": str(input_path), "text_field": text_field, "chunk": config}
    if from_hub:
        stage_config["hub"] = hub
    if limit is not None:
        stage_config["limit"] = limit
    inputs = None if from_hub else {"corpus": Path(input_path)}
    return run_stage(
        "chunk",
        run_dir_for_file(output_path),
        output_path,
        stage_config,
        work,
        inputs=inputs,
        seed=config.seed,
        overwrite=overwrite,
    )
