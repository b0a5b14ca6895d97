"""Cross-fitted E-steps: latents inferred by a model that never trained on the document.

When an M-step trains many epochs on a small bootstrap corpus, its model learns the chosen
latents by heart, and the next E-step, run on the same documents, re-picks them, wrong ones
included (docs/EXPERIMENTS.md, "Why iteration 2 stands still"). Cross-fitting deals the
bootstrap documents into ``folds`` folds (document ``i`` of the file goes to fold ``i % folds``); the latents of
each fold are inferred by a model trained like the M-step on everything except that fold.
The paper's regime (about 2 epochs of a large corpus) does not need it; a data-starved one
with many epochs does. Each fold costs one extra training per EM iteration from 2 on, on
(folds - 1) / folds of the bootstrap latents (plus whatever else the M-step trains on).

The merged latents are written under their own name, never over a plain E-step's output,
so that a run directory reused with another number of folds cannot mistake one for the other.
"""

from __future__ import annotations

from pathlib import Path

from bolt.core.records import Document, read_documents, write_jsonl
from bolt.errors import BoltError


def in_fold(documents: list[Document], fold: int, folds: int, inside: bool = True) -> list[Document]:
    """The documents of ``fold`` (every ``folds``-th, in file order), or with ``inside=False``
    all the others."""
    return [d for i, d in enumerate(documents) if (i % folds == fold) == inside]


def write_fold_inputs(chunks: Path, folds: int, directory: Path, stem: str = "bootstrap") -> list[Path]:
    """Split a chunked file into one E-step input per fold: ``directory/<stem>.fold-<f>.chunks.jsonl``
    (rewritten every time: identical bytes keep a finished E-step valid)."""
    documents = read_documents(chunks)
    paths = []
    for fold in range(folds):
        path = directory / f"{stem}.fold-{fold}.chunks.jsonl"
        write_jsonl(path, in_fold(documents, fold, folds))
        paths.append(path)
    return paths


def merge_folds(fold_outputs: list[Path], order: Path, output: Path) -> Path:
    """Write the fold E-steps' documents to ``output`` in the order of the chunked file ``order``."""
    chosen = {d.id: d for path in fold_outputs for d in read_documents(path)}
    wanted = [d.id for d in read_documents(order)]
    missing = [i for i in wanted if i not in chosen]
    if missing or len(chosen) != len(wanted):
        raise BoltError(
            f"the fold E-steps ({', '.join(str(p) for p in fold_outputs)}) "
            f"do not cover the documents of {order} exactly "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(chosen) - len(wanted) + len(missing)} not in it): "
            "delete the fold outputs and rerun."
        )
    write_jsonl(output, [chosen[i] for i in wanted])
    return output
