"""File formats between stages: reading corpora and chunk files, bad input, atomic writes, resume files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bolt.core.records import (
    CHUNKS_FORMAT,
    LATENTS_FORMAT,
    Chunk,
    Document,
    DocumentScan,
    PartialDocuments,
    finished_documents,
    is_chunked_file,
    merged_documents,
    read_corpus,
    read_documents,
    write_json,
    write_jsonl,
)
from bolt.errors import BoltError


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write_lines(path, [json.dumps(row, ensure_ascii=False) for row in rows])


# --- raw corpora: bad input ---------------------------------------------------------


def test_malformed_json_line_names_path_and_line(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", ['{"text": "fine"}', "", '{"text": "broken"'])
    with pytest.raises(BoltError) as info:
        read_corpus(path)
    message = str(info.value)
    assert str(path) in message
    assert ":3" in message  # the blank line 2 still counts
    assert "malformed JSON" in message


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(BoltError) as info:
        read_corpus(path)
    message = str(info.value)
    assert "UTF-8" in message
    assert f"{path}:2" in message


def test_json_array_line_is_rejected(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", ['{"text": "a"}', '["text", "b"]'])
    with pytest.raises(BoltError, match=r":2: expected a JSON object, got list"):
        read_corpus(path)


def test_missing_text_field_names_field_and_line(tmp_path):
    path = jsonl(tmp_path / "corpus.jsonl", [{"text": "a"}, {"body": "b"}])
    with pytest.raises(BoltError) as info:
        read_corpus(path)
    message = str(info.value)
    assert f"{path}:2" in message
    assert "'text'" in message
    assert "body" in message  # the fields that are there
    assert "--text-field" in message


def test_non_string_text_is_rejected(tmp_path):
    path = jsonl(tmp_path / "corpus.jsonl", [{"text": ["not", "a", "string"]}])
    with pytest.raises(BoltError, match=r":1: 'text' must be a string"):
        read_corpus(path)


def test_unpaired_surrogate_escape_is_a_clear_error(tmp_path):
    # "\ud83d" is legal JSON syntax but not a Unicode character: it can never be written back
    # as UTF-8 or tokenised, so it must be reported where it is, not crash a later stage.
    path = write_lines(tmp_path / "corpus.jsonl", ['{"text": "fine"}', '{"text": "half an emoji \\ud83d here"}'])
    with pytest.raises(BoltError, match=rf"{path.name}:2"):
        read_corpus(path)


def test_empty_documents_are_skipped_with_a_warning(tmp_path):
    path = jsonl(tmp_path / "corpus.jsonl", [{"text": "one."}, {"text": ""}, {"text": " \n\t "}, {"text": "two."}])
    with pytest.warns(UserWarning, match="skipped 2 empty"):
        documents = read_corpus(path)
    assert [d.text for d in documents] == ["one.", "two."]
    # default ids are positions in the file, so skipping does not renumber later rows
    assert [d.id for d in documents] == ["corpus-0", "corpus-3"]


def test_corpus_of_only_empty_documents_is_an_error(tmp_path):
    path = jsonl(tmp_path / "corpus.jsonl", [{"text": ""}, {"text": "   "}])
    with pytest.warns(UserWarning, match="skipped 2 empty"), pytest.raises(BoltError, match="no non-empty documents"):
        read_corpus(path)


def test_blank_file_is_an_error(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", ["", "   "])
    with pytest.raises(BoltError, match="no non-empty documents"):
        read_corpus(path)


def test_duplicate_ids_are_an_error(tmp_path):
    path = jsonl(
        tmp_path / "corpus.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}]
    )
    with pytest.raises(BoltError) as info:
        read_corpus(path)
    message = str(info.value)
    assert "duplicate id 'a'" in message
    assert f"{path}:3" in message and f"{path}:1" in message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(BoltError, match="no such file"):
        read_corpus(tmp_path / "nope.jsonl")
    with pytest.raises(BoltError, match="is a directory"):
        read_corpus(tmp_path)


# --- raw corpora: formats -----------------------------------------------------------


def test_ids_default_and_extra_fields_are_meta(tmp_path):
    path = jsonl(
        tmp_path / "web.jsonl",
        [
            {"text": "first", "url": "http://a", "score": 0.5},
            {"id": 7, "text": "second", "tags": ["x", "y"]},
            {"id": None, "text": "third"},
        ],
    )
    documents = read_corpus(path)
    assert [d.id for d in documents] == ["web-0", "7", "web-2"]
    assert documents[0].meta == {"url": "http://a", "score": 0.5}
    assert documents[1].meta == {"tags": ["x", "y"]}
    assert documents[2].meta == {}


def test_custom_text_field(tmp_path):
    path = jsonl(tmp_path / "corpus.jsonl", [{"content": "hello", "text": "kept as meta"}])
    (document,) = read_corpus(path, text_field="content")
    assert document.text == "hello"
    assert document.meta == {"text": "kept as meta"}


def test_parquet_corpus(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"id": ["p", None, "r"], "text": ["Alpha.", "Beta?", "Gamma!"], "lang": ["en", "de", "fr"]})
    path = tmp_path / "corpus.parquet"
    pq.write_table(table, path)
    documents = read_corpus(path)
    assert [(d.id, d.text, d.meta) for d in documents] == [
        ("p", "Alpha.", {"lang": "en"}),
        ("corpus-1", "Beta?", {"lang": "de"}),
        ("r", "Gamma!", {"lang": "fr"}),
    ]
    assert not is_chunked_file(path)


def test_parquet_missing_text_column_names_the_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"body": ["a", "b"]}), path)
    with pytest.raises(BoltError, match=r"row 0: no 'text' field"):
        read_corpus(path)


def test_broken_parquet_is_a_clear_error(tmp_path):
    path = tmp_path / "corpus.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(BoltError, match="cannot read as Parquet"):
        read_corpus(path)


def test_json_array_corpus(tmp_path):
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps([{"text": "a b c", "id": "x"}, {"text": "d", "source": "s"}]), encoding="utf-8")
    documents = read_corpus(path)
    assert [(d.id, d.text, d.meta) for d in documents] == [("x", "a b c", {}), ("corpus-1", "d", {"source": "s"})]
    assert not is_chunked_file(path)


def test_json_corpus_must_be_an_array_of_objects(tmp_path):
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps({"text": "a"}), encoding="utf-8")
    with pytest.raises(BoltError, match="must be an array"):
        read_corpus(path)
    path.write_text(json.dumps([{"text": "a"}, "b"]), encoding="utf-8")
    with pytest.raises(BoltError, match="item 1"):
        read_corpus(path)
    path.write_text('[{"text": "a"},', encoding="utf-8")
    with pytest.raises(BoltError, match="not a UTF-8 JSON array"):
        read_corpus(path)


def test_crlf_line_endings_read(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"text": "a"}\r\n{"text": "b"}\r\n')
    assert [d.text for d in read_corpus(path)] == ["a", "b"]


# --- chunked documents ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
extra_fields = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in ("text", "prefix", "latent")), json_values, max_size=3
)
# text that stresses line-based formats: newlines, carriage returns, Unicode line separators
tricky_text = st.text(max_size=40) | st.text(alphabet='ab \n\r\t\u2028\u2029\x85\x0b\x0c"\\{}', max_size=40)


@st.composite
def documents(draw, with_latents: bool | None = None):
    latents = draw(st.booleans()) if with_latents is None else with_latents
    chunks = [
        Chunk(
            text=draw(tricky_text),
            prefix=draw(tricky_text),
            latent=draw(tricky_text) if latents else None,
            extra=draw(extra_fields),
        )
        for _ in range(draw(st.integers(1, 4)))
    ]
    return Document(
        id=draw(st.text(min_size=1, max_size=8)),
        chunks=chunks,
        meta=draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
    )


@settings(max_examples=60, deadline=None)
@given(docs=st.lists(documents(), min_size=1, max_size=4, unique_by=lambda d: d.id))
def test_documents_round_trip(tmp_path_factory, docs):
    path = tmp_path_factory.mktemp("roundtrip") / "docs.jsonl"
    write_jsonl(path, docs)
    assert read_documents(path) == docs
    assert is_chunked_file(path)
    formats = [json.loads(line)["format"] for line in path.read_text(encoding="utf-8").split("\n") if line]
    assert formats == [LATENTS_FORMAT if d.has_latents else CHUNKS_FORMAT for d in docs]


def test_extra_chunk_fields_survive_and_latents_file_reads_with_require_latents(tmp_path):
    document = Document(
        id="d",
        chunks=[
            Chunk("One. ", latent="why one", extra={"log_weights": [-1.5, -2.0], "latent_token_ids": [1, 2, 3]}),
            Chunk("Two.", prefix="One. ", latent="why two", extra={"ess": 1.7}),
        ],
        meta={"source": "s"},
    )
    path = tmp_path / "latents.jsonl"
    write_jsonl(path, [document])
    row = json.loads(path.read_text(encoding="utf-8"))
    assert row["format"] == LATENTS_FORMAT
    assert row["chunks"][0]["log_weights"] == [-1.5, -2.0]
    (back,) = read_documents(path, require_latents=True)
    assert back == document
    assert back.text == "One. Two."


def test_require_latents_names_the_chunk(tmp_path):
    document = Document(id="d", chunks=[Chunk("a", latent="z"), Chunk("b"), Chunk("c")])
    path = tmp_path / "chunks.jsonl"
    write_jsonl(path, [Document(id="first", chunks=[Chunk("x", latent="y")]), document])
    assert json.loads(path.read_text(encoding="utf-8").split("\n")[1])["format"] == CHUNKS_FORMAT
    assert len(read_documents(path)) == 2
    with pytest.raises(BoltError) as info:
        read_documents(path, require_latents=True)
    message = str(info.value)
    assert f"{path}:2 chunk 1" in message
    assert "latent" in message


def test_unknown_format_is_an_error(tmp_path):
    path = jsonl(tmp_path / "chunks.jsonl", [{"format": "bolt.chunks/99", "id": "a", "chunks": [{"text": "x"}]}])
    with pytest.raises(BoltError, match=r":1: unknown format 'bolt.chunks/99'"):
        read_documents(path)


def test_raw_corpus_given_to_read_documents_hints_bolt_chunk(tmp_path):
    path = jsonl(tmp_path / "corpus.jsonl", [{"text": "raw document"}])
    with pytest.raises(BoltError, match=r":1: no 'chunks' field.*`bolt chunk`"):
        read_documents(path)
    assert not is_chunked_file(path)


@pytest.mark.parametrize(
    "row, match",
    [
        ({"id": "a", "chunks": []}, "non-empty list"),
        ({"id": "a", "chunks": "text"}, "non-empty list"),
        ({"id": "a", "chunks": [{"text": "x"}, {"prefix": "y"}]}, "chunk 1: each chunk must be an object"),
        ({"id": "a", "chunks": [{"text": "x", "latent": 3}]}, "chunk 0: 'prefix' and 'latent' must be strings"),
        ({"id": "a", "chunks": [{"text": "x", "prefix": None}]}, "chunk 0: 'prefix' and 'latent' must be strings"),
        ({"id": "a"}, "no 'chunks' field"),
    ],
)
def test_bad_chunk_rows(tmp_path, row, match):
    path = jsonl(tmp_path / "chunks.jsonl", [row])
    with pytest.raises(BoltError, match=match):
        read_documents(path)


def test_duplicate_document_ids_in_chunk_file(tmp_path):
    row = {"format": CHUNKS_FORMAT, "id": "same", "chunks": [{"text": "x"}]}
    path = jsonl(tmp_path / "chunks.jsonl", [row, row])
    with pytest.raises(BoltError, match=r":2: duplicate document id 'same'"):
        read_documents(path)


def test_chunk_file_without_documents(tmp_path):
    path = write_lines(tmp_path / "chunks.jsonl", [""])
    with pytest.raises(BoltError, match="no documents"):
        read_documents(path)
    assert not is_chunked_file(path)


# --- atomic writes --------------------------------------------------------------------


class ExplodingRow:
    def to_json(self):
        raise RuntimeError("disk on fire")


def rows_then_failure():
    yield Document(id="ok", chunks=[Chunk("written before the failure")])
    yield ExplodingRow()


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_jsonl(target, rows_then_failure())
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_existing_target(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"id": "old"}])
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        write_jsonl(target, rows_then_failure())
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_failed_write_json_keeps_the_existing_target(tmp_path):
    target = tmp_path / "sub" / "value.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json(target, {"a": object()})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1}
    assert os.listdir(target.parent) == ["value.json"]


def test_successful_write_replaces_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "out.jsonl"
    write_jsonl(target, [{"n": 1}])
    write_jsonl(target, [{"n": 2}, {"n": 3}])
    assert target.read_text(encoding="utf-8") == '{"n": 2}\n{"n": 3}\n'
    assert os.listdir(target.parent) == ["out.jsonl"]


# --- partial results of interrupted stages ---------------------------------------------


def doc(doc_id: str, text: str = "text") -> Document:
    return Document(id=doc_id, chunks=[Chunk(text, latent="z")], meta={"m": 1})


def test_partial_documents_reload(tmp_path):
    path = tmp_path / "run" / "partial.jsonl"
    partial = PartialDocuments(path, "key")
    assert partial.done == {}
    partial.add(doc("a"))
    partial.add(doc("b", "ünïcödé text"))
    reloaded = PartialDocuments(path, "key")
    assert reloaded.done == {"a": doc("a").to_json(), "b": doc("b", "ünïcödé text").to_json()}


def test_partial_documents_ignore_other_config_keys(tmp_path):
    path = tmp_path / "partial.jsonl"
    PartialDocuments(path, "old").add(doc("a"))
    new = PartialDocuments(path, "new")
    assert new.done == {}
    new.add(doc("b"))
    assert set(PartialDocuments(path, "old").done) == {"a"}
    assert set(PartialDocuments(path, "new").done) == {"b"}


def test_merged_documents_reads_the_partial_files_back_in_input_order_one_record_at_a_time(tmp_path):
    run = tmp_path / "run"
    first, second = (
        PartialDocuments(run / "partial-0000.jsonl", "key", keep=False),
        PartialDocuments(run / "partial-0001.jsonl", "key"),
    )
    second.add(doc("c", "ç"))
    first.add(doc("b"))
    PartialDocuments(run / "partial-0001.jsonl", "other").add(doc("a", "another config"))
    first.add(doc("a"))
    assert first.done == {"b": None, "a": None}, "keep=False holds the ids only"
    (run / "partial-0000.jsonl").open("ab").write(
        b'{"config_key": "key", "document": {"id": "d", "chu'
    )  # a kill mid-line
    merged = merged_documents(run, "key", iter(["a", "c", "b"]))
    assert list(merged) == [doc("a").to_json(), doc("c", "ç").to_json(), doc("b").to_json()]  # the order asked
    with pytest.raises(RuntimeError, match="'x' has no record"):
        list(merged_documents(run, "key", ["a", "x"]))
    assert (run / "partial-0000.jsonl").read_bytes().endswith(b"\n"), "the cut line was dropped"
    assert set(finished_documents(run, "key", keep=False)) == {"a", "b", "c"}


def test_a_scan_cuts_the_file_into_shards_that_seek_to_their_documents(tmp_path):
    path = tmp_path / "chunks.jsonl"
    path.write_text(
        "\n"
        + "".join(
            json.dumps(doc(name, "ü" * (3 + ord(name) % 5)).to_json(), ensure_ascii=False) + "\n\n"
            for name in "abcdefg"
        ),
        encoding="utf-8",
    )
    scan = DocumentScan(path, limit=6, finished={"a", "b", "c"})
    assert len(scan) == 6
    shards = scan.shards(3)
    assert [index for index, _ in shards] == [1, 2], "the first shard (a, b) is all finished"
    assert [[d.id for d in shard] for _, shard in shards] == [["c", "d"], ["e", "f"]]
    assert [[d.id for d in shard] for _, shard in shards] == [["c", "d"], ["e", "f"]], (
        "a range reads again when iterated again"
    )
    assert all(len(pickle.dumps(shard)) < 300 for _, shard in shards)
    assert DocumentScan(path, finished=set("abcdefg")).shards(2) == []
    path.write_text(path.read_text() + '{"id": "a", "chunks": [{"text": "x"}]}\n')
    with pytest.raises(BoltError, match="duplicate document id 'a'"):
        DocumentScan(path)


def half_line(document: Document, key: str = "key", cut_inside: str | None = None) -> bytes:
    line = json.dumps({"config_key": key, "document": document.to_json()}, ensure_ascii=False).encode("utf-8")
    cut = line.index(cut_inside.encode("utf-8")) + 1 if cut_inside else len(line) // 2
    return line[:cut]


def test_partial_documents_drop_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "partial.jsonl"
    partial = PartialDocuments(path, "key")
    partial.add(doc("a"))
    partial.add(doc("b"))
    with open(path, "ab") as handle:
        handle.write(half_line(doc("c")))
    assert set(PartialDocuments(path, "key").done) == {"a", "b"}


def test_partial_documents_cut_inside_a_multibyte_character(tmp_path):
    # documents are written with raw UTF-8, so a kill can stop in the middle of a character
    path = tmp_path / "partial.jsonl"
    PartialDocuments(path, "key").add(doc("a"))
    with open(path, "ab") as handle:
        handle.write(half_line(doc("c", "日本語のテキスト"), cut_inside="本"))
    assert set(PartialDocuments(path, "key").done) == {"a"}


def test_partial_documents_resume_after_a_kill_twice(tmp_path):
    """A rerun after a kill appends new documents; a second rerun must still see them."""
    path = tmp_path / "partial.jsonl"
    PartialDocuments(path, "key").add(doc("a"))
    with open(path, "ab") as handle:
        handle.write(half_line(doc("b")))
    rerun = PartialDocuments(path, "key")
    assert set(rerun.done) == {"a"}
    rerun.add(doc("b"))
    rerun.add(doc("c"))
    assert set(PartialDocuments(path, "key").done) == {"a", "b", "c"}


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x1c", "\r"])
def test_partial_documents_with_unicode_line_separators_in_text(tmp_path, separator):
    path = tmp_path / "partial.jsonl"
    partial = PartialDocuments(path, "key")
    partial.add(doc("a", f"line one{separator}line two"))
    partial.add(doc("b"))
    assert PartialDocuments(path, "key").done == {
        "a": doc("a", f"line one{separator}line two").to_json(),
        "b": doc("b").to_json(),
    }


# --- corpus or chunks ----------------------------------------------------------------


def test_is_chunked_file(tmp_path):
    corpus = jsonl(tmp_path / "corpus.jsonl", [{"text": "a"}])
    chunks = tmp_path / "chunks.jsonl"
    write_jsonl(chunks, [Document(id="a", chunks=[Chunk("a")])])
    latents = tmp_path / "latents.jsonl"
    write_jsonl(latents, [Document(id="a", chunks=[Chunk("a", latent="z")])])
    assert not is_chunked_file(corpus)
    assert is_chunked_file(chunks)
    assert is_chunked_file(latents)
    with pytest.raises(BoltError, match="no such file"):
        is_chunked_file(tmp_path / "missing.jsonl")
