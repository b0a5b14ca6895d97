"""Cross-fitting folds: a partition of the documents, and a merge that restores file order."""

from __future__ import annotations

from bolt.core.records import Chunk, Document, read_documents, write_jsonl
from bolt.em.crossfit import in_fold, merge_folds, write_fold_inputs


def _documents(n: int) -> list[Document]:
    return [Document(id=f"d{i}", chunks=[Chunk(text=f"text {i}", prefix="")]) for i in range(n)]


def test_folds_partition_the_documents():
    documents = _documents(7)
    folds = [in_fold(documents, f, 3) for f in range(3)]
    assert [[d.id for d in fold] for fold in folds] == [["d0", "d3", "d6"], ["d1", "d4"], ["d2", "d5"]]
    assert [d.id for d in in_fold(documents, 1, 3, inside=False)] == ["d0", "d2", "d3", "d5", "d6"]


def test_fold_inputs_merge_back_in_file_order(tmp_path):
    source = tmp_path / "bootstrap.chunks.jsonl"
    write_jsonl(source, _documents(5))
    inputs = write_fold_inputs(source, 2, tmp_path / "folds")
    assert [p.name for p in inputs] == ["bootstrap.fold-0.chunks.jsonl", "bootstrap.fold-1.chunks.jsonl"]
    # fold outputs written in reverse, as E-steps of different folds would finish
    outputs = []
    for fold, path in enumerate(inputs):
        outputs.append(tmp_path / f"out-{fold}.jsonl")
        write_jsonl(outputs[-1], list(reversed(read_documents(path))))
    merged = merge_folds(outputs[::-1], source, tmp_path / "merged.jsonl")
    assert read_documents(merged) == read_documents(source)


def test_a_fold_output_missing_a_document_is_refused(tmp_path):
    import pytest

    from bolt.errors import BoltError

    source = tmp_path / "bootstrap.chunks.jsonl"
    write_jsonl(source, _documents(3))
    partial = tmp_path / "fold-0.jsonl"
    write_jsonl(partial, _documents(2))
    with pytest.raises(BoltError, match=r"1 missing, e.g. \['d2'\].*delete the fold outputs and rerun"):
        merge_folds([partial], source, tmp_path / "merged.jsonl")
    assert not (tmp_path / "merged.jsonl").exists()
