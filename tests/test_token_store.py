"""The token store: the same ids, windows, epoch sizes, losses and weights as tokenising in memory; reuse, rebuild,
errors, waiting.

The reference everywhere is the in-memory path ``bolt train`` had before the store: read
every document, ``tokenize_document`` each, render from the lists.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from window_recorder import record_windows

from bolt.core import token_store
from bolt.core.layouts import Layout, TokenizedDocument, render, rendered_length, tokenize_document
from bolt.core.modeling import byte_tokenizer
from bolt.core.records import Chunk, Document, is_chunked_file, read_corpus, read_documents
from bolt.core.special_tokens import LATENT_TOKENS, MarkerIds, marker_ids
from bolt.core.token_store import StoreKey, TokenStore, open_token_store, tokenizer_fingerprint
from bolt.errors import BoltError
from bolt.train import training
from bolt.train.training import TrainConfig, train, window_stream


def marked(tokenizer):
    tokenizer.add_special_tokens({"additional_special_tokens": list(LATENT_TOKENS)}, replace_extra_special_tokens=False)
    return tokenizer


@pytest.fixture(scope="module")
def bpe_tokenizer(tiny_latents):
    """A byte-level BPE with real merges (so pieces are not one token per byte), trained here on the world's text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [chunk.text for document in read_documents(tiny_latents["warm_latents"]) for chunk in document.chunks]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False),
    )
    return marked(PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="\u0120"))


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rich_latents(tiny_latents, tmp_path_factory):
    """World latents with every special case: sampled ids that override the latent text, a rephrasing, an empty latent,
    a non-ASCII id, a chunk with latent ids but no latent text, and a blank line."""
    rows = [json.loads(line) for line in tiny_latents["warm_latents"].read_text().splitlines()]
    rows[0]["chunks"][1]["latent_token_ids"] = [5, 6, 7, 300]
    rows[1]["meta"]["synthetic"] = "Rephrased: Let a = 3 + 4 (mod 10). So a = 7."
    rows[2]["id"] = "dôc-2 ✓"
    rows[3]["chunks"][0]["latent"] = ""
    rows[4]["meta"]["synthetic"] = None  # a field that is not a string is not tokenised
    path = write_rows(tmp_path_factory.mktemp("rich") / "rich.latents.jsonl", rows)
    path.write_text(path.read_text().replace("\n", "\n\n", 1))
    return path


@pytest.fixture(scope="module")
def all_synthetic(tiny_latents, tmp_path_factory):
    rows = [json.loads(line) for line in tiny_latents["warm_latents"].read_text().splitlines()]
    for index, row in enumerate(rows):
        row["meta"]["synthetic"] = f"Rephrasing {index}: " + "".join(chunk["text"] for chunk in row["chunks"])[::-1]
    return write_rows(tmp_path_factory.mktemp("synthetic") / "synthetic.jsonl", rows)


def in_memory_documents(path: Path, layout: Layout) -> list[Document]:
    """What ``load_training_documents`` returned before the store."""
    if not is_chunked_file(path):
        return [Document(id=doc.id, chunks=[Chunk(text=doc.text)], meta=doc.meta) for doc in read_corpus(path)]
    return read_documents(path, require_latents=layout.needs_latents and layout is not Layout.PURE)


def in_memory_training_data(config, data_path, tokenizer, markers, *args, **kwargs):
    """``bolt train``'s data before the store: every document tokenised into lists, the epoch rendered to count it."""
    layout = Layout(config.layout)
    documents = in_memory_documents(data_path, layout)
    with_latents = layout.needs_latents and not (
        layout is Layout.PURE and all("synthetic" in d.meta for d in documents)
    )
    tokenized = [tokenize_document(tokenizer, d, with_latents) for d in documents]
    tokens_per_epoch = sum(
        len(render(d, layout, markers, np.random.default_rng([config.seed, 0, i]), config.raw_ratio))
        for i, d in enumerate(tokenized)
    )
    return tokenized, tokens_per_epoch


def store_of(path: Path, tokenizer, directory: Path, **kwargs) -> TokenStore:
    return open_token_store(path, tokenizer, directory, **kwargs)


# --- what the store holds -------------------------------------------------------------


@pytest.mark.parametrize(("tokenizer_name", "block", "workers"), [("byte", 1024, 1), ("bpe", 3, 1), ("bpe", 2, 2)])
def test_store_gives_back_tokenize_document_for_every_document(
    rich_latents, bpe_tokenizer, tmp_path, monkeypatch, tokenizer_name, block, workers
):
    tokenizer = bpe_tokenizer if tokenizer_name == "bpe" else marked(byte_tokenizer())
    monkeypatch.setattr(
        token_store, "_BLOCK", block
    )  # the documents are written in several blocks (by 2 worker processes)
    documents = read_documents(rich_latents)
    store = store_of(rich_latents, tokenizer, tmp_path / "store", workers=workers)
    assert store.header["workers"] == workers
    assert len(store) == len(documents) == 8
    for with_latents in (True, False):
        for index, document in enumerate(documents):
            assert store.document(index, with_latents) == tokenize_document(tokenizer, document, with_latents), (
                index,
                with_latents,
            )
    assert store.document(0, True).latents[1] == [5, 6, 7, 300]
    assert store.document(2, True).id == "dôc-2 ✓"
    header = store.header
    assert header["format"] == "bolt.tokens/1" and header["dtype"] == "uint16" and store.tokens.dtype == np.uint16
    assert header["documents"] == 8 and header["chunks"] == sum(len(d.chunks) for d in documents)
    assert header["documents_with_synthetic"] == 1 and header["documents_with_synthetic_field"] == 2
    assert header["chunks_without_latent"] == 0
    assert header["source"]["sha256"] == StoreKey.of(rich_latents, tokenizer).source_sha256
    assert header["tokenizer"]["fingerprint"] == tokenizer_fingerprint(tokenizer)
    markers = marker_ids(tokenizer)
    rendered = sum(
        len(
            render(tokenize_document(tokenizer, d, True), Layout.RANDOM, markers, np.random.default_rng([5, 0, i]), 0.2)
        )
        for i, d in enumerate(documents)
    )
    assert (
        store.tokens_per_epoch(Layout.RANDOM, markers, seed=5, raw_ratio=0.2, block=3) == rendered
    )  # offsets read 3 documents at a time


def test_arrays_are_plain_npy_files_mapped_not_read(rich_latents, tmp_path):
    tokenizer = marked(byte_tokenizer())
    store = store_of(rich_latents, tokenizer, tmp_path / "store")
    directory = tmp_path / "store"
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [f"{name}.npy" for name in token_store._ARRAYS] + ["header.json"]
    )
    for name in token_store._ARRAYS:
        loaded = np.load(directory / f"{name}.npy")  # numpy's own reader agrees with the streamed header
        assert np.array_equal(loaded, getattr(store, name))
        assert isinstance(np.load(directory / f"{name}.npy", mmap_mode="r"), np.memmap)
    assert store.tokens.base is not None and not store.tokens.flags.owndata  # a view of the map, not a copy
    chunks = store.document_chunks
    assert chunks[0] == 0 and chunks[-1] == len(store.chunk_text) and np.all(np.diff(chunks) >= 1)
    assert len(store.tokens) == store.header["tokens"]


def test_a_large_vocabulary_is_stored_as_uint32(tmp_path):
    tokenizer = marked(byte_tokenizer())
    tokenizer.add_tokens([f"word{i}" for i in range(65_600 - len(tokenizer))])
    data = write_rows(tmp_path / "c.jsonl", [{"id": "a", "text": "word65300 and word7"}])
    store = store_of(data, tokenizer, tmp_path / "store")
    assert store.tokens.dtype == np.uint32 and store.header["dtype"] == "uint32"
    assert store.document(0, False).texts == [tokenizer.encode("word65300 and word7", add_special_tokens=False)]
    assert max(store.document(0, False).texts[0]) > 65_535


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_plain_corpus_is_one_chunk_per_document(tmp_path, suffix):
    rows = [
        {"id": "x", "text": "First document."},
        {"text": "   "},
        {"text": "Third, with no id.", "source": "web", "synthetic": "A rephrasing."},
    ]
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = tmp_path / "corpus.parquet"
        pq.write_table(pa.Table.from_pylist(rows), data)
    else:
        data = write_rows(tmp_path / "corpus.jsonl", rows)
    tokenizer = marked(byte_tokenizer())
    with pytest.warns(UserWarning, match="skipped 1 empty"):
        store = store_of(data, tokenizer, tmp_path / "store")
    with pytest.warns(UserWarning, match="skipped 1 empty"):
        expected = in_memory_documents(data, Layout.RAW)
    assert [store.document(i, False) for i in range(len(store))] == [
        tokenize_document(tokenizer, d, False) for d in expected
    ]
    assert [store.document(i, False).id for i in range(len(store))] == ["x", "corpus-2"]
    assert store.header["source"]["kind"] == "corpus"


# --- windows and epoch sizes ------------------------------------------------------------

MARKERS = MarkerIds(sol=900, eol=901, prior=902, post=903, bos=998, eos=999)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.lists(st.integers(0, 50), max_size=6), min_size=1, max_size=6),
    latent_lengths=st.lists(st.integers(0, 5), min_size=6, max_size=6),
    synthetic=st.one_of(st.none(), st.lists(st.integers(0, 50), max_size=8)),
    with_latents=st.booleans(),
    layout=st.sampled_from(list(Layout)),
    raw_ratio=st.sampled_from([0.0, 0.3, 1.0]),
    bos=st.sampled_from([998, None]),
    seed=st.integers(0, 2**32 - 1),
)
def test_rendered_length_is_the_length_of_render(
    texts, latent_lengths, synthetic, with_latents, layout, raw_ratio, bos, seed
):
    markers = MarkerIds(sol=900, eol=901, prior=902, post=903, bos=bos, eos=999)
    latents = [[7] * n for n in latent_lengths[: len(texts)]] if with_latents else None
    document = TokenizedDocument(id="d", texts=texts, latents=latents, synthetic=synthetic)
    coins = raw_ratio > 0 or layout is Layout.RANDOM
    arguments = (
        "d",
        len(texts),
        document.n_text_tokens,
        sum(map(len, latents)) if latents is not None else None,
        len(synthetic) if synthetic is not None else None,
        layout,
        markers,
    )
    try:
        expected = len(render(document, layout, markers, np.random.default_rng(seed), raw_ratio))
    except BoltError as error:
        with pytest.raises(BoltError, match=str(error)):
            rendered_length(*arguments, np.random.default_rng(seed), raw_ratio)
        return
    assert rendered_length(*arguments, np.random.default_rng(seed) if coins else None, raw_ratio) == expected


CASES = [(layout, 0.0) for layout in Layout] + [(Layout.RANDOM, 0.4), (Layout.JOINT, 0.5), (Layout.PURE, 0.5)]


@pytest.mark.parametrize(
    ("data", "layout", "raw_ratio"),
    [("rich", layout, ratio) for layout, ratio in CASES]
    + [
        ("synthetic", Layout.PURE, 0.0),
        ("synthetic", Layout.RANDOM, 0.3),
        ("corpus", Layout.RAW, 0.0),
        ("chunks", Layout.RAW, 0.5),
    ],
)
def test_windows_and_epoch_size_equal_the_in_memory_path(
    rich_latents, all_synthetic, tiny_latents, bpe_tokenizer, tmp_path, data, layout, raw_ratio
):
    path = {
        "rich": rich_latents,
        "synthetic": all_synthetic,
        "corpus": tiny_latents["warm"],
        "chunks": tiny_latents["bootstrap_chunks"],
    }[data]
    markers = marker_ids(bpe_tokenizer)
    config = TrainConfig(layout=layout.value, raw_ratio=raw_ratio, seq_len=37, seed=3)
    expected_documents, expected_tokens = in_memory_training_data(config, path, bpe_tokenizer, markers)
    documents, tokens = training.training_data(
        config, path, bpe_tokenizer, markers, tmp_path / "store", None, builds=True
    )
    assert tokens == expected_tokens
    windows = 3 * expected_tokens // 37  # three epochs: every epoch's order and coins
    stream, reference = window_stream(documents, config, markers), window_stream(expected_documents, config, markers)
    assert [next(stream) for _ in range(windows)] == [next(reference) for _ in range(windows)]


# --- bit-identical training -------------------------------------------------------------


def _recorded_train(monkeypatch, config, data, output, reference: bool):
    with monkeypatch.context() as patch:
        windows = record_windows(patch)
        if reference:
            patch.setattr(training, "training_data", in_memory_training_data)
        summary = train(config, data, output)
    from safetensors.torch import load_file

    losses = [json.loads(line)["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    return summary, windows, losses, load_file(output / "model.safetensors")


@pytest.mark.parametrize(
    ("data", "layout", "raw_ratio"),
    [("rich", "random", 0.0), ("rich", "joint", 0.3), ("corpus", "raw", 0.0), ("synthetic", "pure", 0.0)],
)
def test_training_from_the_store_is_bit_identical_to_the_in_memory_path(
    rich_latents, all_synthetic, tiny_latents, tmp_path, monkeypatch, data, layout, raw_ratio
):
    path = {"rich": rich_latents, "synthetic": all_synthetic, "corpus": tiny_latents["warm"]}[data]
    config = TrainConfig(
        model="tiny", layout=layout, raw_ratio=raw_ratio, seq_len=64, batch_size=2, steps=4, lr=3e-3, log_every=1
    )
    summary, windows, losses, weights = _recorded_train(monkeypatch, config, path, tmp_path / "store", reference=False)
    old_summary, old_windows, old_losses, old_weights = _recorded_train(
        monkeypatch, config, path, tmp_path / "memory", reference=True
    )
    assert windows == old_windows and len(windows) == 8
    assert losses == old_losses and len(losses) == 4
    assert summary["tokens_per_epoch"] == old_summary["tokens_per_epoch"]
    assert weights.keys() == old_weights.keys()
    for name in weights:
        assert torch.equal(weights[name], old_weights[name]), name
    assert not (tmp_path / "store" / "tokens").exists(), "a completed run removes its token store"


# --- reuse, rebuild, the shared cache -----------------------------------------------------


def _count_builds(monkeypatch) -> list[Path]:
    built: list[Path] = []
    real_build = token_store.build_token_store

    def counting(source, tokenizer, directory, *args, **kwargs):
        built.append(directory)
        return real_build(source, tokenizer, directory, *args, **kwargs)

    monkeypatch.setattr(token_store, "build_token_store", counting)
    return built


def test_store_is_reused_for_the_same_bytes_and_tokenizer_and_rebuilt_otherwise(rich_latents, tmp_path, monkeypatch):
    built = _count_builds(monkeypatch)
    data = tmp_path / "data.jsonl"
    data.write_bytes(rich_latents.read_bytes())
    tokenizer = marked(byte_tokenizer())
    first = store_of(data, tokenizer, tmp_path / "store")
    again = store_of(data, marked(byte_tokenizer()), tmp_path / "store")  # an equal tokenizer, another object
    assert len(built) == 1 and again.header == first.header

    data.write_text("\n".join(data.read_text().splitlines()[:3]) + "\n")
    assert len(store_of(data, tokenizer, tmp_path / "store")) == 2 and len(built) == 2  # line 2 is blank

    other = marked(byte_tokenizer())
    other.add_tokens(["Let"])
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)
    rebuilt = store_of(data, other, tmp_path / "store")
    assert len(built) == 3 and rebuilt.document(0, False).texts[0][0] == other.convert_tokens_to_ids("Let")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "store"], (
        "no temporary directory is left behind"
    )


def test_an_interrupted_build_leaves_no_store(rich_latents, tmp_path, monkeypatch):
    def failing_write(self, block):
        raise KeyboardInterrupt

    monkeypatch.setattr(token_store._Writer, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        store_of(rich_latents, marked(byte_tokenizer()), tmp_path / "store")
    assert list(tmp_path.iterdir()) == []


def test_token_cache_is_shared_by_runs_and_kept(rich_latents, tmp_path, monkeypatch):
    from bolt.cli import main

    built = _count_builds(monkeypatch)
    cache = tmp_path / "cache"
    argv = [
        "train",
        str(rich_latents),
        "--model",
        "tiny",
        "--steps",
        "1",
        "--seq-len",
        "64",
        "--batch-size",
        "2",
        "--token-cache",
        str(cache),
    ]
    assert main([*argv, "-o", str(tmp_path / "a"), "--tokenize-workers", "2"]) == 0
    assert main([*argv, "-o", str(tmp_path / "b"), "--layout", "joint"]) == 0
    assert len(built) == 1
    (store,) = cache.iterdir()
    assert store.name == StoreKey.of(rich_latents, marked(byte_tokenizer())).name
    assert json.loads((store / "header.json").read_text())["workers"] == 2
    assert not (tmp_path / "a" / "tokens").exists() and not (tmp_path / "b" / "tokens").exists()


# --- bad input: the reader's errors -------------------------------------------------------


def test_bad_lines_raise_the_readers_errors(tiny_latents, tmp_path):
    lines = tiny_latents["warm_latents"].read_text().splitlines()
    data = tmp_path / "broken.jsonl"
    data.write_text("\n".join([*lines[:3], '{"format": "bolt.latents/1", "chunks": [', *lines[3:]]) + "\n")
    with pytest.raises(BoltError) as expected:
        read_documents(data)
    with pytest.raises(BoltError) as got:
        store_of(data, marked(byte_tokenizer()), tmp_path / "store")
    assert str(got.value) == str(expected.value) and f"{data}:4" in str(got.value)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("problem", ["duplicate id", "malformed line"])
def test_worker_processes_raise_the_readers_errors_in_file_order(tiny_latents, tmp_path, monkeypatch, problem):
    lines = tiny_latents["warm_latents"].read_text().splitlines()
    if problem == "duplicate id":  # checked by the main process, across blocks
        bad = json.loads(lines[6])
        bad["id"] = json.loads(lines[1])["id"]
        lines[6] = json.dumps(bad)
    else:  # found by a worker; the next block's duplicate must not be reported instead
        lines[4] = lines[4][:-5]
        lines[7] = lines[0]
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(BoltError) as expected:
        read_documents(data, require_latents=True)
    monkeypatch.setattr(token_store, "_BLOCK", 2)
    with pytest.raises(BoltError) as got:
        store_of(data, marked(byte_tokenizer()), tmp_path / "store", workers=2, require_latents=True)
    assert str(got.value) == str(expected.value)
    assert f"{data}:{7 if problem == 'duplicate id' else 5}" in str(got.value)
    assert not (tmp_path / "store").exists()


def test_missing_latents_name_file_and_line_also_when_a_raw_run_built_the_store(tiny_latents, tmp_path, monkeypatch):
    rows = [json.loads(line) for line in tiny_latents["warm_latents"].read_text().splitlines()]
    del rows[5]["chunks"][1]["latent"]
    data = write_rows(tmp_path / "gap.jsonl", rows)
    with pytest.raises(BoltError) as expected:
        read_documents(data, require_latents=True)
    assert f"{data}:6 chunk 1" in str(expected.value) and "--layout raw" in str(expected.value)
    tokenizer = marked(byte_tokenizer())
    with pytest.raises(BoltError) as fresh:
        store_of(data, tokenizer, tmp_path / "fresh", require_latents=True)
    assert str(fresh.value) == str(expected.value)
    built = _count_builds(monkeypatch)
    assert store_of(data, tokenizer, tmp_path / "store").header["chunks_without_latent"] == 1  # a raw run's store
    with pytest.raises(BoltError) as reused:
        store_of(data, tokenizer, tmp_path / "store", require_latents=True)
    assert str(reused.value) == str(expected.value) and len(built) == 1


def test_latent_token_ids_outside_the_vocabulary_are_a_clear_error(tiny_latents, tmp_path):
    rows = [json.loads(line) for line in tiny_latents["warm_latents"].read_text().splitlines()]
    rows[1]["chunks"][0]["latent_token_ids"] = [3, 70_000]
    data = write_rows(tmp_path / "ids.jsonl", rows)
    with pytest.raises(BoltError, match=r"latent_token_ids.*65535"):
        store_of(data, marked(byte_tokenizer()), tmp_path / "store")


# --- several processes ----------------------------------------------------------------------


def test_a_waiting_process_takes_the_store_only_once_the_builder_installed_it(rich_latents, tiny_latents, tmp_path):
    tokenizer = marked(byte_tokenizer())
    directory = tmp_path / "store"
    store_of(tiny_latents["warm_latents"], tokenizer, directory)  # stale: another file's store is in place
    result: dict = {}

    def waiter():
        result["store"] = store_of(rich_latents, tokenizer, directory, build=False, poll_seconds=0.02)
        result["at"] = time.monotonic()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive(), "the waiting process must not take the stale store"
    built_at = time.monotonic()
    store_of(rich_latents, tokenizer, directory)
    thread.join(timeout=10)
    assert result["at"] >= built_at
    assert result["store"].header["source"]["sha256"] == StoreKey.of(rich_latents, tokenizer).source_sha256
    assert result["store"].document(0, True) == tokenize_document(tokenizer, read_documents(rich_latents)[0], True)
