"""Stage 1b: a teacher writes a latent for every chunk (``bolt synthesize``).

Reads ``bolt.chunks/1``, writes ``bolt.latents/1``. Finished documents are appended to
``partial.jsonl`` in the run directory as they complete, so an interrupted run resumes
without asking the teacher again for anything it already answered.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bolt.errors import BoltError
from bolt.records import Chunk, Document, PartialDocuments, read_documents, write_jsonl
from bolt.rundir import RunDir, partial_key, run_dir_for_file, run_stage
from bolt.teachers.base import LatentRequest, Teacher


@dataclass
class SynthesizeConfig:
    """How chunks are sent to the teacher."""

    batch_size: int = 8
    """Chunks per teacher call."""

    def validate(self) -> None:
        if self.batch_size < 1:
            raise BoltError(f"--batch-size must be at least 1, got {self.batch_size}.")


def synthesize_documents(teacher: Teacher, documents: list[Document], config: SynthesizeConfig, partial: PartialDocuments) -> list[dict]:
    requests = [
        LatentRequest(document.id, index, chunk.prefix, chunk.text)
        for document in documents
        if document.id not in partial.done
        for index, chunk in enumerate(document.chunks)
    ]
    by_id = {document.id: document for document in documents}
    latents: dict[str, list[str | None]] = {}
    progress = tqdm(total=len(requests), desc=f"synthesize ({teacher.name})", unit="chunk", disable=None)
    for start in range(0, len(requests), config.batch_size):
        batch = requests[start : start + config.batch_size]
        answers = teacher.write_latents(batch)
        if len(answers) != len(batch):
            raise RuntimeError(f"teacher {teacher.name} returned {len(answers)} latents for {len(batch)} requests")
        for request, answer in zip(batch, answers):
            document = by_id[request.document_id]
            slots = latents.setdefault(document.id, [None] * len(document.chunks))
            slots[request.chunk_index] = answer
            if all(slot is not None for slot in slots):
                chunks = [Chunk(text=c.text, prefix=c.prefix, latent=z, extra=c.extra) for c, z in zip(document.chunks, slots)]
                partial.add(Document(id=document.id, chunks=chunks, meta=document.meta))
                del latents[document.id]
        progress.update(len(batch))
    progress.close()
    return [partial.done[document.id] for document in documents]


def synthesize_stage(teacher: Teacher, input_path: Path, output_path: Path, config: SynthesizeConfig) -> dict:
    """``bolt synthesize``: a latent for every chunk of ``input_path``, written to ``output_path``."""
    config.validate()
    stage_config = {"input": str(input_path), "teacher": teacher.describe(), "synthesize": config}

    def work(run: RunDir) -> dict:
        documents = read_documents(input_path)
        key = partial_key(stage_config, input_path)
        partial = PartialDocuments(run.path / "partial.jsonl", key)
        rows = synthesize_documents(teacher, documents, config, partial)
        chunks = [chunk for row in rows for chunk in row["chunks"]]
        empty = sum(not chunk["latent"].strip() for chunk in chunks)
        if empty and not getattr(teacher, "allows_empty_latents", False):
            warnings.warn(f"the teacher returned {empty} empty latent(s) of {len(chunks)}; check the teacher model and prompt.", stacklevel=3)
        write_jsonl(output_path, rows)
        partial.path.unlink(missing_ok=True)
        return {"documents": len(rows), "chunks": len(chunks), "empty_latents": empty}

    return run_stage("synthesize", run_dir_for_file(output_path), output_path, stage_config, work, inputs={"chunks": input_path})
