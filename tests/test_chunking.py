"""Stage 1: sentence units, chunk lengths, prefixes, and the ``bolt chunk`` stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bolt.core.chunking import ChunkConfig, chunk_document, chunk_lengths, chunk_stage, split_units, with_prefixes
from bolt.core.records import CorpusDocument, Document, read_documents
from bolt.core.rundir import file_sha256
from bolt.errors import BoltError

WORDS = [
    "the",
    "Dr.",
    "Mr.",
    "Mrs.",
    "U.S.",
    "e.g.",
    "i.e.",
    "3.50",
    "$3.50",
    "2.5%",
    "apples",
    "Smith",
    "No.",
    "vs.",
    "etc.",
    "Jan.",
    "a.m.",
    "“quoted”",
    "(aside)",
    "it's",
    "Zürich",
    "東京",
    "—",
    "x",
]
ENDINGS = [".", "!", "?", "...", "", ".”", "?!", ":", ";"]
SEPARATORS = [" ", "  ", "\n", "\n\n", "\n \n\t", "\t", " \n\n\n ", "", "\r\n\r\n"]

sentences = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=8),
    st.sampled_from(ENDINGS),
)


@st.composite
def sentence_like(draw):
    parts = [draw(st.sampled_from(["", " ", "\n\n", "  \n"]))]
    for sentence in draw(st.lists(sentences, min_size=1, max_size=12)):
        parts += [sentence, draw(st.sampled_from(SEPARATORS))]
    return "".join(parts)


texts = st.text() | st.text(alphabet=" \t\n\r.!?,;:'\"()-aAbZ09é日\u2028\u00a0", max_size=80) | sentence_like()


def long_text(n_sentences: int, tag: str = "") -> str:
    return " ".join(f"Sentence number {i} of document {tag} says something new." for i in range(n_sentences))


def units_per_chunk(document: Document, units: list[str]) -> list[int]:
    """How many consecutive units make up each chunk (chunks are concatenations of whole units)."""
    counts, position = [], 0
    for chunk in document.chunks:
        start, text = position, ""
        while text != chunk.text:
            assert len(text) < len(chunk.text), "chunk does not end on a unit boundary"
            text += units[position]
            position += 1
        counts.append(position - start)
    assert position == len(units)
    return counts


# --- sentence units ------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(text=texts, seed=st.integers(0, 2**63 - 1))
def test_units_and_chunks_give_back_the_text(text, seed):
    units = split_units(text)
    assert "".join(units) == text
    if text.strip():
        assert all(unit.strip() for unit in units), units
    else:
        assert units == [text]
    # whitespace between units opens the following unit
    assert all(not unit[-1].isspace() for unit in units[:-1]), units
    document = chunk_document(CorpusDocument(id="d", text=text), ChunkConfig(seed=seed))
    assert document.text == text
    assert all(chunk.text for chunk in document.chunks) or text == ""


def test_hard_paragraph_is_two_sentences():
    assert split_units("Dr. Smith paid $3.50 for 2 apples. Then he left!") == [
        "Dr. Smith paid $3.50 for 2 apples.",
        " Then he left!",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("e.g. this is U.S. policy. Mr. Jones said no.", ["e.g. this is U.S. policy.", " Mr. Jones said no."]),
        ("Title\n\nBody text here. More.", ["Title", "\n\nBody text here.", " More."]),
        ("One.\n \n\tTwo.\n\n", ["One.", "\n \n\tTwo.\n\n"]),
        ("\n\n  Leading blank lines. Next one.", ["\n\n  Leading blank lines.", " Next one."]),
    ],
)
def test_units_keep_abbreviations_and_give_whitespace_to_the_next_unit(text, expected):
    assert split_units(text) == expected


# --- chunk lengths ---------------------------------------------------------------------


def test_chunk_lengths_mean_and_spread():
    config = ChunkConfig()  # 1 + Poisson(7), capped at 20
    lengths: list[int] = []
    for document in range(20):
        per_document = chunk_lengths(800, config, np.random.default_rng(document))
        assert sum(per_document) == 800
        lengths += per_document[:-1]  # the last chunk is cut to what remains
    lengths_array = np.array(lengths)
    assert len(lengths) > 1900
    assert abs(lengths_array.mean() - 8.0) < 0.25
    assert 5.5 < lengths_array.var() < 8.5  # Poisson(7) spread, not a constant
    assert lengths_array.min() >= 1 and lengths_array.max() <= 20


@pytest.mark.parametrize("mean_units, max_units", [(1.0, 20), (3.0, 4), (8.0, 8), (30.0, 20)])
def test_chunk_lengths_are_within_bounds(mean_units, max_units):
    config = ChunkConfig(mean_units=mean_units, max_units=max_units)
    lengths = chunk_lengths(500, config, np.random.default_rng(1))
    assert sum(lengths) == 500
    assert all(1 <= length <= max_units for length in lengths)
    if mean_units == 1.0:
        assert lengths == [1] * 500


def test_chunk_lengths_of_nothing():
    assert chunk_lengths(0, ChunkConfig(), np.random.default_rng(0)) == []


@pytest.mark.parametrize("mean_units", [1.0, 3.0, 4.6, 8.0])
def test_uniform_chunks(mean_units):
    config = ChunkConfig(mean_units=mean_units, uniform=True)
    lengths = chunk_lengths(47, config, np.random.default_rng(0))
    size = round(mean_units)
    assert lengths[:-1] == [size] * (len(lengths) - 1)
    assert 1 <= lengths[-1] <= size
    assert sum(lengths) == 47
    # and on a real document
    text = long_text(23)
    document = chunk_document(CorpusDocument(id="d", text=text), config)
    counts = units_per_chunk(document, split_units(text))
    assert len(split_units(text)) == 23
    assert counts[:-1] == [size] * (len(counts) - 1) and 1 <= counts[-1] <= size


@settings(max_examples=50, deadline=None)
@given(
    n_sentences=st.integers(1, 120),
    mean_units=st.floats(1, 12),
    max_units=st.integers(1, 20),
    seed=st.integers(0, 1000),
)
def test_document_chunks_have_whole_units_within_bounds(n_sentences, mean_units, max_units, seed):
    text = long_text(n_sentences)
    units = split_units(text)
    assert len(units) == n_sentences
    document = chunk_document(
        CorpusDocument(id="d", text=text), ChunkConfig(mean_units=mean_units, max_units=max_units, seed=seed)
    )
    counts = units_per_chunk(document, units)
    assert all(1 <= count <= max_units for count in counts)


# --- determinism -------------------------------------------------------------------------


def test_same_text_same_chunks_whatever_the_id_and_call_order():
    text = long_text(150, "A")
    config = ChunkConfig(seed=3)
    first = chunk_document(CorpusDocument(id="one", text=text), config)
    chunk_document(CorpusDocument(id="other", text=long_text(90, "B")), ChunkConfig(seed=4))
    chunk_document(CorpusDocument(id="other", text=long_text(90, "B")), config)
    again = chunk_document(CorpusDocument(id="two", text=text, meta={"x": 1}), ChunkConfig(seed=3))
    assert [c.text for c in again.chunks] == [c.text for c in first.chunks]
    assert again.id == "two" and again.meta == {"x": 1}
    assert len(first.chunks) > 5


def test_different_seeds_give_different_lengths():
    text = long_text(300)
    units = split_units(text)
    by_seed = [
        tuple(units_per_chunk(chunk_document(CorpusDocument(id="d", text=text), ChunkConfig(seed=seed)), units))
        for seed in range(5)
    ]
    assert len(set(by_seed)) == 5
    # and a different text of the same length is cut differently under the same seed
    other = long_text(300, "x")
    other_counts = tuple(
        units_per_chunk(chunk_document(CorpusDocument(id="d", text=other), ChunkConfig(seed=0)), split_units(other))
    )
    assert other_counts != by_seed[0]


# --- prefixes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_chunks() -> list[str]:
    document = chunk_document(CorpusDocument(id="d", text=long_text(60)), ChunkConfig(mean_units=3, seed=1))
    assert len(document.chunks) >= 8
    return [chunk.text for chunk in document.chunks]


@pytest.mark.parametrize("prefix_chunks", [0, 1, 3, -1])
def test_prefixes(many_chunks, prefix_chunks):
    text = "".join(many_chunks)
    document = chunk_document(
        CorpusDocument(id="d", text=text), ChunkConfig(mean_units=3, seed=1, prefix_chunks=prefix_chunks)
    )
    texts = [chunk.text for chunk in document.chunks]
    assert texts == many_chunks  # the prefix setting does not change the cuts
    for n, chunk in enumerate(document.chunks):
        if prefix_chunks == -1:
            expected = "".join(texts[:n])
            assert text.startswith(chunk.prefix + chunk.text)
        else:
            expected = "".join(texts[max(0, n - prefix_chunks) : n])
        assert chunk.prefix == expected
    assert document.chunks[0].prefix == ""
    if prefix_chunks == 1:
        assert [c.prefix for c in document.chunks[1:]] == texts[:-1]
    if prefix_chunks == 3:
        assert document.chunks[5].prefix == texts[2] + texts[3] + texts[4]


def test_with_prefixes_direct():
    chunks = with_prefixes(["a", "b", "c", "d"], 2)
    assert [(c.text, c.prefix) for c in chunks] == [("a", ""), ("b", "a"), ("c", "ab"), ("d", "bc")]
    assert [c.prefix for c in with_prefixes(["a", "b", "c"], -1)] == ["", "a", "ab"]


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        (dict(mean_units=0.5), "--mean-units"),
        (dict(mean_units=-3), "--mean-units"),
        (dict(max_units=0), "--max-units"),
        (dict(prefix_chunks=-2), "--prefix-chunks"),
        (dict(seed=-1), "--seed"),
    ],
)
def test_config_validation(kwargs, flag):
    with pytest.raises(BoltError, match=flag):
        ChunkConfig(**kwargs).validate()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        dict(mean_units=1, max_units=1),
        dict(prefix_chunks=-1),
        dict(prefix_chunks=0),
        dict(uniform=True, seed=2**40),
    ],
)
def test_valid_configs(kwargs):
    ChunkConfig(**kwargs).validate()


# --- the stage ----------------------------------------------------------------------------


def write_corpus(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_chunk_stage_end_to_end(tmp_path):
    rows = [
        {"id": "a", "text": long_text(40, "a"), "source": "web"},
        {"id": "b", "text": "Short one. Only two sentences!"},
        {"text": "Title\n\n" + long_text(12, "c")},
    ]
    corpus = write_corpus(tmp_path / "corpus.jsonl", rows)
    output = tmp_path / "out" / "chunks.jsonl"
    config = ChunkConfig(seed=5, prefix_chunks=3)
    summary = chunk_stage(corpus, output, config)

    documents = read_documents(output)
    assert [d.id for d in documents] == ["a", "b", "corpus-2"]
    assert [d.text for d in documents] == [row["text"] for row in rows]
    assert documents[0].meta == {"source": "web"}
    assert summary == {"documents": 3, "chunks": sum(len(d.chunks) for d in documents)}
    assert len(documents[0].chunks) > 1
    expected = chunk_document(CorpusDocument(id="a", text=rows[0]["text"]), config)
    assert [(c.text, c.prefix) for c in documents[0].chunks] == [(c.text, c.prefix) for c in expected.chunks]

    manifest = json.loads((tmp_path / "out" / "chunks.jsonl.run" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "complete"
    assert manifest["command"] == "chunk"
    assert manifest["inputs"]["corpus"]["sha256"] == file_sha256(corpus)
    assert manifest["config"]["chunk"]["seed"] == 5
    assert manifest["summary"] == summary

    before = output.stat().st_mtime_ns
    manifest_before = (tmp_path / "out" / "chunks.jsonl.run" / "manifest.json").read_bytes()
    assert chunk_stage(corpus, output, ChunkConfig(seed=5, prefix_chunks=3)) == summary
    assert output.stat().st_mtime_ns == before
    assert (tmp_path / "out" / "chunks.jsonl.run" / "manifest.json").read_bytes() == manifest_before

    # another config is new work, not a reuse, and replaces the earlier output only when asked to
    with pytest.raises(BoltError, match=r"another config.*--overwrite"):
        chunk_stage(corpus, output, ChunkConfig(seed=5, prefix_chunks=1))
    assert output.stat().st_mtime_ns == before
    chunk_stage(corpus, output, ChunkConfig(seed=5, prefix_chunks=1), overwrite=True)
    assert all(
        c.prefix == (d.chunks[i - 1].text if i else "") for d in read_documents(output) for i, c in enumerate(d.chunks)
    )


def test_chunk_stage_same_document_same_chunks_anywhere_in_the_corpus(tmp_path):
    shared = {"id": "shared", "text": long_text(50, "s")}
    filler = [{"id": f"f{i}", "text": long_text(10 + i, str(i))} for i in range(3)]
    first = chunk_stage(
        write_corpus(tmp_path / "one.jsonl", [shared, *filler]), tmp_path / "one.out.jsonl", ChunkConfig()
    )
    second = chunk_stage(
        write_corpus(tmp_path / "two.jsonl", [*filler[::-1], shared]), tmp_path / "two.out.jsonl", ChunkConfig()
    )
    assert first["documents"] == second["documents"] == 4
    by_id = [
        {d.id: [c.text for c in d.chunks] for d in read_documents(tmp_path / name)}
        for name in ("one.out.jsonl", "two.out.jsonl")
    ]
    assert by_id[0] == by_id[1]


def test_chunk_stage_rejects_bad_config_before_doing_anything(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", [{"text": "a."}])
    output = tmp_path / "chunks.jsonl"
    with pytest.raises(BoltError, match="--max-units"):
        chunk_stage(corpus, output, ChunkConfig(max_units=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]


def test_chunk_stage_bad_corpus_is_a_bolt_error(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "a."}\n{"txt": "b."}\n', encoding="utf-8")
    output = tmp_path / "chunks.jsonl"
    with pytest.raises(BoltError, match=r"corpus.jsonl:2"):
        chunk_stage(corpus, output, ChunkConfig())
    assert not output.exists()


# --- corpora by Hugging Face dataset id, streamed ------------------------------------------


@pytest.fixture()
def fake_hub(monkeypatch):
    """datasets.load_dataset answering with a streamed dataset built here (nothing is downloaded); records its
    arguments."""
    import datasets

    calls = []
    rows = [
        {"id": None, "text": f"Row {i} says one thing. Then another thing. And a third.", "url": f"u{i}", "score": 4.5}
        for i in range(30)
    ]
    rows[3]["text"] = "   "

    def load_dataset(name, config=None, split=None, streaming=False, revision=None):
        calls.append({"name": name, "config": config, "split": split, "streaming": streaming, "revision": revision})
        if name == "org/missing":
            raise FileNotFoundError("Dataset 'org/missing' doesn't exist on the Hub")
        return datasets.IterableDataset.from_generator(lambda: iter(rows))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_a_hub_dataset_is_streamed_and_chunked(fake_hub, tmp_path, capsys):
    import json

    from bolt.cli import main
    from bolt.core.records import read_documents

    output = tmp_path / "chunks.jsonl"
    argv = [
        "chunk",
        "hf:org/corpus",
        "--dataset-config",
        "sub",
        "--split",
        "train",
        "--revision",
        "abc123",
        "--limit",
        "10",
        "--mean-units",
        "2",
        "-o",
        str(output),
    ]
    assert main(argv) == 0
    assert fake_hub == [
        {"name": "org/corpus", "config": "sub", "split": "train", "streaming": True, "revision": "abc123"}
    ]
    documents = read_documents(output)
    assert [d.id for d in documents] == [f"corpus-{i}" for i in range(11) if i != 3], (
        "the empty row is skipped, ids follow the rows"
    )
    assert documents[0].meta == {"url": "u0", "score": 4.5} and documents[0].text.startswith("Row 0 says")
    manifest = json.loads((tmp_path / "chunks.jsonl.run" / "manifest.json").read_text())
    assert (
        manifest["config"]["hub"] == {"config": "sub", "split": "train", "revision": "abc123"}
        and manifest["config"]["limit"] == 10
    )
    capsys.readouterr()
    assert main(argv) == 0 and len(fake_hub) == 1, "a finished chunking is not streamed again"
    assert main(["chunk", "hf:org/missing", "-o", str(tmp_path / "m.jsonl")]) == 2
    assert "cannot stream the dataset org/missing" in capsys.readouterr().err
    assert main(["chunk", "hf:org/corpus", "--text-field", "body", "-o", str(tmp_path / "b.jsonl")]) == 2
    assert "no 'body' field" in capsys.readouterr().err
    (tmp_path / "c.jsonl").write_text('{"text": "a. b."}\n')
    assert main(["chunk", str(tmp_path / "c.jsonl"), "--split", "test", "-o", str(tmp_path / "d.jsonl")]) == 2
    assert "are for a Hugging Face dataset input" in capsys.readouterr().err
