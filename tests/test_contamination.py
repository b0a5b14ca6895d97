"""`bolt contamination`: 13-gram overlap of training files (text and latents) with benchmark test sets."""

from __future__ import annotations

import json

import pytest

from bolt.cli import main
from bolt.core.records import write_jsonl
from bolt.errors import BoltError
from bolt.evaluate.contamination import ContaminationConfig, contamination, ngrams, words

GSM8K_TEST = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday she did 50 minutes of babysitting. "
        "How much did she earn?",
        "answer": "#### 10",
    },
    {
        "question": "How many legs do 3 cats have?",
        "answer": "#### 12",
    },  # shorter than 13 words: its whole text is the n-gram
]


def test_words_ignore_case_punctuation_and_markup():
    assert words("Natalia SOLD 48/2 = $\\boxed{24}$ clips!") == ["natalia", "sold", "48", "2", "boxed", "24", "clips"]
    assert len(ngrams("a b c d e", 3)) == 3 and ngrams("a b", 3) == {("a", "b")}


@pytest.fixture()
def data(tmp_path):
    write_jsonl(tmp_path / "tasks" / "gsm8k" / "test.jsonl", GSM8K_TEST)
    clean = {"id": "clean", "text": "The derivative of x squared is two x, as any calculus book will tell you."}
    copied = {
        "id": "copied",
        "text": "Forum post: natalia sold clips to 48 of her friends in April, "
        "and then she sold HALF as many clips in May... how many?",
    }
    write_jsonl(tmp_path / "corpus.jsonl", [clean, copied])
    # a latents file whose text is clean but whose latent copies a test question (a teacher that has seen GSM8K)
    latent = "Weng earns $12 an hour for babysitting. Yesterday she did 50 minutes of babysitting, so 10."
    write_jsonl(
        tmp_path / "latents.jsonl",
        [
            {
                "format": "bolt.latents/1",
                "id": "doc-a",
                "chunks": [{"text": "A babysitter is paid by the hour.", "prefix": "", "latent": latent}],
                "meta": {},
            },
            {
                "format": "bolt.latents/1",
                "id": "doc-b",
                "chunks": [
                    {
                        "text": "Cats are mammals. How many legs do 3 cats have? 12, four each.",
                        "prefix": "",
                        "latent": "",
                    }
                ],
                "meta": {},
            },
        ],
    )
    return tmp_path


def test_overlap_in_text_and_in_latents_is_found_and_clean_text_is_not(data):
    config = ContaminationConfig(datasets=["gsm8k"], data_dir=data / "tasks")
    result = contamination([data / "corpus.jsonl", data / "latents.jsonl"], data / "out", config)
    gsm8k = result["datasets"]["gsm8k"]
    assert (gsm8k["test_documents"], gsm8k["contaminated"]) == (3, 3)
    assert {e["test_document"]: e["files"] for e in gsm8k["examples"]} == {
        "gsm8k-test-0": [str(data / "corpus.jsonl")],
        "gsm8k-test-1": [str(data / "latents.jsonl")],
        "gsm8k-test-2": [str(data / "latents.jsonl")],
    }
    corpus, latents = result["files"][str(data / "corpus.jsonl")], result["files"][str(data / "latents.jsonl")]
    assert (corpus["documents"], corpus["documents_overlapping"], corpus["documents_with_an_overlapping_latent"]) == (
        2,
        1,
        0,
    )
    assert corpus["examples"][0]["document"] == "copied"
    assert (
        latents["documents"],
        latents["documents_overlapping"],
        latents["documents_with_an_overlapping_latent"],
    ) == (2, 2, 1)
    assert json.loads((data / "out" / "contamination.json").read_text()) == result
    assert "| gsm8k | 3 | 3 | 100.00% |" in (data / "out" / "contamination.md").read_text()


def test_a_corpus_without_overlap_reports_none_and_longer_ngrams_miss_short_copies(data):
    write_jsonl(
        data / "clean.jsonl",
        [{"id": "clean", "text": "Nothing here resembles any test question at all, whatever words we use today."}],
    )
    result = contamination(
        [data / "clean.jsonl"], data / "clean-out", ContaminationConfig(datasets=["gsm8k"], data_dir=data / "tasks")
    )
    assert result["datasets"]["gsm8k"]["contaminated"] == 0
    # the copied forum post shares 18 words in a row with test question 0: a 13-gram finds it, a 30-gram does not
    long = contamination(
        [data / "corpus.jsonl"],
        data / "long-out",
        ContaminationConfig(ngram=30, datasets=["gsm8k"], data_dir=data / "tasks"),
    )
    assert long["datasets"]["gsm8k"]["contaminated"] == 0


def test_cli_and_bad_input(data, capsys):
    assert (
        main(
            [
                "contamination",
                str(data / "corpus.jsonl"),
                "--datasets",
                "gsm8k",
                "--data-dir",
                str(data / "tasks"),
                "-o",
                str(data / "cli"),
            ]
        )
        == 0
    )
    assert "| gsm8k | 3 | 1 | 33.33% |" in capsys.readouterr().out
    with pytest.raises(BoltError, match="--datasets takes some of gsm8k, math, mmlu_stem"):
        ContaminationConfig(datasets=["gsm9k"]).validate()
    assert (
        main(["contamination", str(data / "missing.jsonl"), "--data-dir", str(data / "tasks"), "-o", str(data / "x")])
        == 2
    )
    assert "missing.jsonl: no such file" in capsys.readouterr().err
