"""API teachers against a local fake OpenAI/Anthropic server driven by the real SDKs.

Every test starts its own server on 127.0.0.1 (``fake_llm_server``); nothing leaves the
machine. Timeouts and backoffs are tiny so the whole file runs in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bolt.cli import main
from bolt.core.records import Chunk, Document, write_jsonl
from bolt.errors import BoltError
from bolt.teachers.prompts import LATENT_V1, WRAP_COT_V1, WRAP_V1, load_templates

pytest.importorskip("openai")
pytest.importorskip("anthropic")

from fake_llm_server import FakeLLMServer, Faults, answer_text, item_of

# The request timeout leaves room for a loaded machine: a good answer that arrives after it
# would be counted twice by the server and break the tests' exact counts. Tests that inject
# `timeout` faults add TIMEOUT_FAULTS (a shorter timeout, and a server that hangs longer).
FAST = ["--backoff", "0.001", "--request-timeout", "10", "--poll-interval", "0.01"]
TIMEOUT_FAULTS = {"client": ["--request-timeout", "3"], "hang_seconds": 4.0}
KEY = f"sk-test-{uuid.uuid4().hex}"
KEY_VARIABLE = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def make_chunks(path: Path, documents: int = 6, chunks: int = 4) -> list[Document]:
    docs = []
    for d in range(documents):
        texts = [
            f"Document {d} sentence {c}: {d * 7 + c} apples make {d * 7 + c + 1} minus one." for c in range(chunks)
        ]
        docs.append(
            Document(
                id=f"doc-{d}",
                chunks=[Chunk(text=t, prefix=texts[c - 1] if c else "") for c, t in enumerate(texts)],
                meta={"source": "test"},
            )
        )
    write_jsonl(path, docs)
    return docs


def expected_latent(chunk: Chunk) -> str:
    return answer_text(item_of(LATENT_V1.messages(chunk.prefix, chunk.text)[1]["content"]))


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def api_args(family: str, server: FakeLLMServer, chunks: Path, output: Path, *extra) -> list[str]:
    base = server.url + "/v1" if family == "openai" else server.url
    return [
        "synthesize",
        str(chunks),
        "-o",
        str(output),
        "--teacher",
        family,
        "--teacher-model",
        "test-model",
        "--base-url",
        base,
        *FAST,
        *map(str, extra),
    ]


def run_json(capsys, argv: list[str]) -> dict:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert KEY not in captured.out + captured.err
    return json.loads(captured.out)


def files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture(params=["openai", "anthropic"])
def family(request, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE[request.param], KEY)
    return request.param


def test_random_failures_every_chunk_answered_exactly_once(family, tmp_path, capsys):
    documents = make_chunks(tmp_path / "chunks.jsonl")
    with FakeLLMServer(Faults(rate=0.2, seed=3, hang_seconds=TIMEOUT_FAULTS["hang_seconds"])) as server:
        summary = run_json(
            capsys,
            api_args(
                family,
                server,
                tmp_path / "chunks.jsonl",
                tmp_path / "out.jsonl",
                "--concurrency",
                "4",
                "--max-bad-replies",
                "10",
                *TIMEOUT_FAULTS["client"],
            ),
        )
    rows = read_rows(tmp_path / "out.jsonl")
    assert [row["id"] for row in rows] == [d.id for d in documents]
    for row, document in zip(rows, documents):
        assert row["format"] == "bolt.latents/1"
        assert [c["latent"] for c in row["chunks"]] == [expected_latent(c) for c in document.chunks]
    items = {item_of(LATENT_V1.messages(c.prefix, c.text)[1]["content"]) for d in documents for c in d.chunks}
    assert set(server.log.answered) == items and set(server.log.answered.values()) == {1}
    faults = server.log.faults
    assert sum(faults.values()) > 0, "the seed must inject some faults for this test to mean anything"
    this_run = summary["spend"]["this_run"]
    assert (
        this_run["errors"].get("rate_limited", 0) == faults["429"]
        and this_run["errors"].get("http_500", 0) == faults["500"]
    )
    assert this_run["errors"].get("malformed", 0) == faults["malformed"]
    for kind in ("empty", "truncated", "refused"):
        assert this_run["bad_replies"].get(kind, 0) == faults[kind]
    spend = json.loads((tmp_path / "out.jsonl.run" / "spend.json").read_text())
    assert spend == summary["spend"] and spend["answers"]["output_tokens"] > 0
    assert any(KEY in key for key in server.log.api_keys if key), "the server should have seen the key"
    assert files_containing(tmp_path, KEY) == []


@pytest.mark.parametrize("expire", [0, 1])
def test_batch_partial_failures_resubmit_only_failures(family, tmp_path, capsys, expire):
    documents = make_chunks(tmp_path / "chunks.jsonl")
    with FakeLLMServer(
        Faults(batch_item_error_rate=0.3, expire_first_batches=expire, polls_to_finish=2, seed=5)
    ) as server:
        summary = run_json(
            capsys, api_args(family, server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--batch")
        )
    rows = read_rows(tmp_path / "out.jsonl")
    for row, document in zip(rows, documents):
        assert [c["latent"] for c in row["chunks"]] == [expected_latent(c) for c in document.chunks]
    n_chunks = sum(len(d.chunks) for d in documents)
    assert len(server.log.answered) == n_chunks and set(server.log.answered.values()) == {1}
    failed_in_batches = sum(server.log.seen.values()) - n_chunks
    assert failed_in_batches > 0 and server.log.batches_created > 1
    assert summary["spend"]["this_run"]["errors"]["batch_item_failed"] == failed_in_batches
    assert files_containing(tmp_path, KEY) == []


def test_batches_respect_the_request_limit(tmp_path, monkeypatch):
    from bolt.teachers.api_teacher import ApiConfig, Prompt, api_teacher
    from bolt.teachers.cache import TeacherCache
    from bolt.teachers.chat import Sampling

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    prompts = [Prompt([{"role": "user", "content": f"question {i}"}], "t1") for i in range(10)]
    with FakeLLMServer() as server:
        teacher = api_teacher(
            "openai",
            model="m",
            sampling=Sampling(32),
            config=ApiConfig(batch=True, poll_interval=0.0),
            base_url=server.url + "/v1",
        )
        teacher.backend.max_batch_requests = 3
        answers, failures = teacher.complete(prompts, TeacherCache(tmp_path / "cache.sqlite"))
    assert failures == {} and answers == [answer_text(item_of(f"question {i}")) for i in range(10)]
    assert server.log.batches_created == 4  # ceil(10 / 3)
    assert [len(items) for items in (record["items"] for record in server.batches.values())] == [3, 3, 3, 1]


def test_batch_endpoints_failing_for_a_while_are_retried_without_a_second_batch(family, tmp_path, capsys):
    """503s from upload, create, lookup or polling are retried; a submission that may have gone through is
    looked up, not sent twice."""
    documents = make_chunks(tmp_path / "chunks.jsonl", documents=2, chunks=2)
    with FakeLLMServer(Faults(failing_batch_calls=3, polls_to_finish=2)) as server:
        summary = run_json(
            capsys, api_args(family, server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--batch")
        )
    assert server.log.batches_created == 1
    assert summary["spend"]["this_run"]["errors"] == {"http_503": 3}
    for row, document in zip(read_rows(tmp_path / "out.jsonl"), documents):
        assert [c["latent"] for c in row["chunks"]] == [expected_latent(c) for c in document.chunks]


def test_retry_after_is_honoured(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    make_chunks(tmp_path / "chunks.jsonl", documents=1, chunks=1)
    with FakeLLMServer(Faults(kinds=("429",), fail_first=2, retry_after="0", retry_after_ms="250")) as server:
        start = time.monotonic()
        summary = run_json(
            capsys, api_args("openai", server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--backoff", "0")
        )
        elapsed = time.monotonic() - start
    assert summary["spend"]["this_run"]["errors"] == {"rate_limited": 2}
    assert elapsed >= 0.5, "two 429s with retry-after-ms 250 must wait at least 0.5 s"


def test_backoff_grows_with_full_jitter():
    from bolt.teachers.chat import backoff_seconds

    rng = random.Random(0)
    for attempt in range(6):
        waits = [backoff_seconds(attempt, 0.1, 2.0, None, rng) for _ in range(200)]
        bound = min(2.0, 0.1 * 2**attempt)
        assert 0 <= min(waits) and max(waits) <= bound and max(waits) > 0.8 * bound
    assert backoff_seconds(3, 0.1, 2.0, 0.7, rng) == 0.7 and backoff_seconds(3, 0.1, 2.0, 99.0, rng) == 2.0


def test_bad_replies_are_counted_and_never_written(family, tmp_path, capsys):
    make_chunks(tmp_path / "chunks.jsonl", documents=2, chunks=2)
    argv_base = ["--max-bad-replies", "1", "--max-retries", "1"]
    with FakeLLMServer(Faults(rate=1.0, kinds=("empty", "truncated", "refused", "malformed"), seed=1)) as server:
        code = main(api_args(family, server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", *argv_base))
        err = capsys.readouterr().err
        assert code == 2 and "4 request(s) got no usable answer" in err and "--allow-failures" in err
        assert read_rows(tmp_path / "out.jsonl") == []
        failures = read_rows(tmp_path / "out.jsonl.run" / "failures.jsonl")
        assert len(failures) == 4 and all(f["reason"] for f in failures)
        manifest = json.loads((tmp_path / "out.jsonl.run" / "manifest.json").read_text())
        assert (
            manifest["status"] == "failed" and "got no usable answer" in manifest["error"]
        )  # issue 23: a failed command says so
        summary = run_json(
            capsys,
            api_args(family, server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", *argv_base, "--allow-failures"),
        )
    assert summary["documents"] == 0 and summary["failed_documents"] == 2 and summary["failed_requests"] == 4
    assert server.log.answered == {}


def test_a_refused_request_fails_alone_and_is_not_retried(family, tmp_path, capsys):
    """HTTP 400 (say, a chunk over the context length) fails that request only; the run goes on."""
    documents = make_chunks(tmp_path / "chunks.jsonl", documents=3, chunks=2)
    with FakeLLMServer(Faults(kinds=("400",), fail_first=1)) as server:
        code = main(api_args(family, server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--concurrency", "1"))
        assert code == 2 and "1 request(s) got no usable answer" in capsys.readouterr().err
    (failure,) = read_rows(tmp_path / "out.jsonl.run" / "failures.jsonl")
    assert failure["reason"].startswith("rejected") and "prompt is too long" in failure["reason"]
    assert sum(server.log.seen.values()) == sum(len(d.chunks) for d in documents), (
        "the refused request is not sent again"
    )
    assert len(read_rows(tmp_path / "out.jsonl")) == len(documents) - 1


def test_every_request_refused_stops_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    documents = make_chunks(tmp_path / "chunks.jsonl", documents=10, chunks=2)
    with FakeLLMServer(Faults(rate=1.0, kinds=("400",))) as server:
        code = main(api_args("openai", server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--concurrency", "1"))
    assert code == 2 and "were all refused" in capsys.readouterr().err
    assert sum(server.log.seen.values()) < sum(len(d.chunks) for d in documents)


def test_a_fatal_error_keeps_the_answers_already_in_flight(family, tmp_path, capsys):
    """A bad key stops the run, but the answers of the requests already sent are cached, not lost."""
    make_chunks(tmp_path / "chunks.jsonl", documents=4, chunks=2)
    with FakeLLMServer(Faults(kinds=("401",), fail_first=1, delay=0.3)) as server:
        code = main(api_args(family, server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--concurrency", "4"))
        err = capsys.readouterr().err
    assert code == 2 and "retrying cannot fix" in err and KEY not in err
    assert len(server.log.answered) >= 1, "the other requests in flight were answered"
    assert len(cached_keys(tmp_path / "out.jsonl.run")) == len(server.log.answered)


def test_dry_run_estimates_and_sends_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    documents = make_chunks(tmp_path / "chunks.jsonl")
    pricing = tmp_path / "prices.json"
    pricing.write_text(json.dumps({"test-model": {"input": 2.0, "output": 8.0, "batch_discount": 0.25}}))
    with FakeLLMServer() as server:
        online = run_json(
            capsys,
            api_args(
                "openai", server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--dry-run", "--pricing", pricing
            ),
        )
        batch = run_json(
            capsys,
            api_args(
                "openai",
                server,
                tmp_path / "chunks.jsonl",
                tmp_path / "out.jsonl",
                "--dry-run",
                "--pricing",
                pricing,
                "--batch",
            ),
        )
        unknown = run_json(
            capsys, api_args("openai", server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--dry-run")
        )
        assert sum(server.log.seen.values()) == 0 and not (tmp_path / "out.jsonl").exists()
        spent = run_json(
            capsys, api_args("openai", server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--pricing", pricing)
        )["spend"]
        after = run_json(
            capsys,
            api_args(
                "openai", server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--dry-run", "--pricing", pricing
            ),
        )
    n_chunks = sum(len(d.chunks) for d in documents)
    assert online["requests_to_send"] == n_chunks and online["cached"] == 0
    chars = sum(len(m["content"]) for d in documents for c in d.chunks for m in LATENT_V1.messages(c.prefix, c.text))
    assert chars / 6 < online["estimated_input_tokens"] < chars / 2
    assert online["max_output_tokens"] == 256 * n_chunks
    expected = (online["estimated_input_tokens"] * 2.0 + online["max_output_tokens"] * 8.0) / 1e6
    assert online["estimated_cost_usd_at_most"] == pytest.approx(expected, rel=1e-4)
    assert batch["estimated_cost_usd_at_most"] == pytest.approx(expected * 0.25, rel=1e-4)
    assert unknown["estimated_cost_usd_at_most"] is None
    assert after["cached"] == n_chunks and after["requests_to_send"] == 0 and after["estimated_cost_usd_at_most"] == 0
    users = [LATENT_V1.messages(c.prefix, c.text)[1]["content"] for d in documents for c in d.chunks]
    input_tokens = sum(len(u) // 4 for u in users)  # the fake server's usage figures
    output_tokens = sum(len(answer_text(item_of(u))) // 4 for u in users)
    assert spent["answers"] == {
        "count": n_chunks,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": pytest.approx((input_tokens * 2.0 + output_tokens * 8.0) / 1e6),
    }
    assert spent["this_run"]["cost_usd"] == pytest.approx(spent["answers"]["cost_usd"])


def test_cache_key_follows_the_rendered_request(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    documents = make_chunks(tmp_path / "chunks.jsonl", documents=2, chunks=3)
    cache = ["--cache-dir", tmp_path / "cache"]
    template = tmp_path / "template.json"
    template.write_text(
        json.dumps(
            {"version": "mine-v2", "system": LATENT_V1.system, "user": "Context: {prefix}\nText: {text}\nThoughts?"}
        )
    )
    n = sum(len(d.chunks) for d in documents)
    with FakeLLMServer() as server:

        def sent_by(*extra) -> int:
            before = sum(server.log.seen.values())
            run_json(
                capsys,
                api_args(
                    "openai",
                    server,
                    tmp_path / "chunks.jsonl",
                    tmp_path / f"out-{uuid.uuid4().hex}.jsonl",
                    *cache,
                    *extra,
                ),
            )
            return sum(server.log.seen.values()) - before

        assert sent_by() == n
        assert sent_by() == 0, "a rerun with the same request is answered from the cache"
        assert sent_by("--prompt-file", template) == n
        assert sent_by("--prompt-file", template) == 0
        assert sent_by("--max-new-tokens", 300) == n
        assert sent_by("--temperature", 0.5) == n
        assert sent_by("--batch") == 0, "online and batch answers share the cache"
        changed = make_chunks(tmp_path / "chunks.jsonl", documents=2, chunks=3)
        changed[1].chunks[2].text = "A new last sentence."
        write_jsonl(tmp_path / "chunks.jsonl", changed)
        assert sent_by() == 1, "only the changed chunk is asked again"


_WRITER = """
import sys
from bolt.teachers.cache import TeacherCache
cache = TeacherCache(sys.argv[1])
for i in range(200):
    cache.put(f"key-{i}", f"answer {i} from {sys.argv[2]}", 1, 2, "openai", "m", False)
"""


def test_cache_survives_concurrent_writers(tmp_path):
    from bolt.teachers.cache import TeacherCache

    path = tmp_path / "cache.sqlite"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(n)], env=env, stderr=subprocess.PIPE)
        for n in range(3)
    ]
    for writer in writers:
        assert writer.wait(timeout=60) == 0, writer.stderr.read().decode()
    rows = TeacherCache(path).get_many([f"key-{i}" for i in range(200)])
    assert len(rows) == 200
    assert all(text.startswith(f"answer {key[4:]} from ") for key, (text, *_) in rows.items())


def test_wrap_methods_rephrase_whole_documents(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    corpus = tmp_path / "corpus.jsonl"
    texts = [f"Paper {i}. It shows that {i} + {i} = {2 * i}. Hence the claim." for i in range(16)]
    write_jsonl(corpus, [{"id": f"p{i}", "text": t} for i, t in enumerate(texts)])
    with FakeLLMServer() as server:
        run_json(
            capsys, api_args("anthropic", server, corpus, tmp_path / "wrap.jsonl", "--method", "wrap", "--seed", "1")
        )
        run_json(capsys, api_args("anthropic", server, corpus, tmp_path / "cot.jsonl", "--method", "wrap-cot"))
    wrap, cot = read_rows(tmp_path / "wrap.jsonl"), read_rows(tmp_path / "cot.jsonl")
    styles = set()
    for row, text in zip(wrap, texts):
        style = row["meta"]["synthetic_style"]
        styles.add(style)
        assert row["meta"]["synthetic"] == answer_text(item_of(WRAP_V1[style].messages("", text)[1]["content"]))
        assert row["meta"]["synthetic_template"] == f"wrap-v1/{style}" and row["meta"]["synthetic_method"] == "wrap"
        assert "".join(c["text"] for c in row["chunks"]) == text and all("latent" not in c for c in row["chunks"])
    assert styles == set(WRAP_V1), "16 documents should draw every one of the four styles"
    for row, text in zip(cot, texts):
        assert row["meta"]["synthetic"] == answer_text(item_of(WRAP_COT_V1.messages("", text)[1]["content"]))
    from bolt.core.layouts import tokenize_document
    from bolt.core.records import read_documents

    class CharTokenizer:
        def encode(self, text, add_special_tokens=False):
            return [ord(ch) for ch in text]

    document = read_documents(tmp_path / "wrap.jsonl")[0]
    assert tokenize_document(CharTokenizer(), document, with_latents=False).synthetic == [
        ord(ch) for ch in wrap[0]["meta"]["synthetic"]
    ]


def test_prompt_files_override_and_are_checked(tmp_path):
    styles = tmp_path / "styles.json"
    styles.write_text(
        json.dumps({"version": "s1", "styles": {"pirate": {"system": "Arr.", "user": "Say it as a pirate: {text}"}}})
    )
    templates = load_templates(styles, "wrap")
    assert list(templates) == ["pirate"] and templates["pirate"].version == "s1/pirate"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"version": "x", "system": "s", "user": "uses {unknown}"}))
    with pytest.raises(BoltError, match="not a prompt template"):
        load_templates(broken, "latent")
    two = tmp_path / "two.json"
    two.write_text(
        json.dumps(
            {"version": "2", "styles": {"a": {"system": "s", "user": "{text}"}, "b": {"system": "s", "user": "{text}"}}}
        )
    )
    assert set(load_templates(two, "wrap")) == {"a", "b"}
    with pytest.raises(BoltError, match="takes one template"):
        load_templates(two, "latent")
    with pytest.raises(BoltError, match="unknown --method"):
        load_templates(None, "summarise")


def test_key_from_env_file_only(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    make_chunks(tmp_path / "chunks.jsonl", documents=1, chunks=2)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / ".env").write_text(f"OPENAI_API_KEY={KEY}\n")
    with FakeLLMServer() as server:
        run_json(
            capsys,
            [
                "synthesize",
                str(tmp_path / "chunks.jsonl"),
                "-o",
                str(tmp_path / "out.jsonl"),
                "--teacher",
                "openai",
                "--teacher-model",
                "m",
                "--base-url",
                server.url + "/v1",
                "--env-file",
                str(secrets / ".env"),
                *FAST,
            ],
        )
    assert f"Bearer {KEY}" in server.log.api_keys
    assert "OPENAI_API_KEY" not in os.environ
    assert files_containing(tmp_path, KEY) == [secrets / ".env"]


def test_missing_key_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    make_chunks(tmp_path / "chunks.jsonl", documents=1, chunks=1)
    argv = [
        "synthesize",
        str(tmp_path / "chunks.jsonl"),
        "-o",
        str(tmp_path / "out.jsonl"),
        "--teacher",
        "anthropic",
        "--teacher-model",
        "claude-haiku-4-5",
    ]
    code = main(argv)
    assert code == 2 and "ANTHROPIC_API_KEY" in capsys.readouterr().err
    estimate = run_json(capsys, [*argv, "--dry-run"])
    assert estimate["requests_to_send"] == 1 and estimate["estimated_cost_usd_at_most"] > 0, "a dry run needs no key"


# --- kill and resume ---------------------------------------------------------------


def cli_process(argv: list[str], key_variable: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), key_variable: KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "bolt", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def cached_keys(run_dir: Path) -> set[str]:
    """Keys answered in a run directory's cache (empty while the cache is not created yet).

    Read as the rerun reads it, through a read-write connection (``mode=rw`` opens, never
    creates): after a writer is SIGKILLed, a read-only connection can miss its last commit
    because it does not recover the write-ahead log's index (about 1 in 100 kills, measured
    with SQLite 3.40), while a read-write one does.
    """
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{run_dir / 'teacher-cache.sqlite'}?mode=rw", uri=True)
        ) as connection:
            return {row[0] for row in connection.execute("SELECT key FROM answers")}
    except sqlite3.OperationalError:
        return set()


def test_sigkill_online_then_rerun_matches_an_uninterrupted_run(family, tmp_path, capsys):
    documents = make_chunks(tmp_path / "chunks.jsonl", documents=10, chunks=4)
    n_chunks = sum(len(d.chunks) for d in documents)
    with FakeLLMServer(Faults(rate=0.1, kinds=("500", "429"), seed=2)) as reference_server:
        run_json(capsys, api_args(family, reference_server, tmp_path / "chunks.jsonl", tmp_path / "reference.jsonl"))
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    with FakeLLMServer(Faults(rate=0.1, kinds=("500", "429"), delay=0.03, seed=4)) as server:
        # No timeout faults here: a long request timeout keeps a slow, loaded machine from
        # retrying a good answer (which the server would count as answered twice).
        process = cli_process(
            api_args(
                family,
                server,
                tmp_path / "chunks.jsonl",
                tmp_path / "out.jsonl",
                "--concurrency",
                "2",
                "--request-timeout",
                "30",
            ),
            KEY_VARIABLE[family],
        )
        kill_after = rng.randint(1, n_chunks // 2)  # well before the end, so a slow poll still kills a running process
        deadline = time.monotonic() + 60
        while (
            len(cached_keys(tmp_path / "out.jsonl.run")) < kill_after
            and process.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, f"kill seed {seed}: " + process.stderr.read().decode()
        assert not (tmp_path / "out.jsonl").exists(), (
            f"kill seed {seed}: the run should have been killed before it finished"
        )
        server.wait_idle()  # requests the killed process had sent are counted before the snapshot
        answered_before = dict(server.log.answered)
        stored = cached_keys(tmp_path / "out.jsonl.run")
        seen_before = dict(server.log.seen)
        run_json(
            capsys,
            api_args(family, server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--request-timeout", "30"),
        )
    assert read_rows(tmp_path / "out.jsonl") == read_rows(tmp_path / "reference.jsonl")
    assert 0 < len(stored) < n_chunks
    resent = {item for item, count in server.log.seen.items() if count > seen_before.get(item, 0)}
    assert len(resent) == n_chunks - len(stored), (
        f"kill seed {seed}: the rerun asks exactly for what the cache did not hold"
    )
    assert all(count == 1 for item, count in server.log.answered.items() if item not in resent)
    answered_twice = [item for item, count in server.log.answered.items() if count > 1]
    assert all(answered_before.get(item) == 1 for item in answered_twice) and len(answered_twice) <= 2, (
        "only requests in flight at the kill"
    )
    assert files_containing(tmp_path, KEY) == []


def test_sigkill_during_batch_picks_up_the_submitted_batch(family, tmp_path, capsys):
    documents = make_chunks(tmp_path / "chunks.jsonl", documents=5, chunks=4)
    with FakeLLMServer(Faults(polls_to_finish=10**9)) as server:
        process = cli_process(
            api_args(family, server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--batch"), KEY_VARIABLE[family]
        )
        run_dir = tmp_path / "out.jsonl.run"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with sqlite3.connect(f"file:{run_dir / 'teacher-cache.sqlite'}?mode=ro", uri=True) as connection:
                    if connection.execute("SELECT COUNT(*) FROM batches WHERE batch_id IS NOT NULL").fetchone()[0]:
                        break
            except sqlite3.OperationalError:  # not created yet
                pass
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 0.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert server.log.batches_created == 1 and server.log.answered == {}
        server.faults.polls_to_finish = 0
        run_json(capsys, api_args(family, server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--batch"))
    assert server.log.batches_created == 1, "the rerun must poll the submitted batch, not submit again"
    n_chunks = sum(len(d.chunks) for d in documents)
    assert len(server.log.answered) == n_chunks and set(server.log.answered.values()) == {1}
    for row, document in zip(read_rows(tmp_path / "out.jsonl"), documents):
        assert [c["latent"] for c in row["chunks"]] == [expected_latent(c) for c in document.chunks]
    assert files_containing(tmp_path, KEY) == []


def test_vllm_offline_teacher_through_a_stand_in_module(tmp_path, capsys, monkeypatch):
    """The vLLM backend against a stand-in ``vllm`` module with the documented ``LLM.chat`` shape (vLLM needs a GPU)."""
    import types

    calls = []
    truncate = {"sentence 3": True}

    class LLM:
        def __init__(self, model, seed):
            self.model = model

        def chat(self, conversations, params):
            calls.append(len(conversations))
            outputs = []
            for messages in conversations:
                user = messages[-1]["content"]
                finish = "length" if "sentence 3" in user and truncate["sentence 3"] else "stop"
                sample = types.SimpleNamespace(
                    text=answer_text(item_of(user)), finish_reason=finish, token_ids=[1, 2, 3]
                )
                outputs.append(types.SimpleNamespace(outputs=[sample], prompt_token_ids=[0] * 10))
            return outputs

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=lambda **kw: kw))
    documents = make_chunks(tmp_path / "chunks.jsonl", documents=3, chunks=4)
    argv = [
        "synthesize",
        str(tmp_path / "chunks.jsonl"),
        "-o",
        str(tmp_path / "out.jsonl"),
        "--teacher",
        "vllm",
        "--teacher-model",
        "m",
    ]
    assert main(argv) == 2 and "3 request(s) got no usable answer" in capsys.readouterr().err
    summary = run_json(capsys, [*argv, "--allow-failures"])
    assert calls == [12, 3], "the rerun asks only for the truncated ones"
    assert summary["documents"] == 0 and summary["spend"]["this_run"]["bad_replies"] == {"truncated": 3}
    truncate["sentence 3"] = False
    run_json(capsys, argv)
    assert calls == [12, 3, 3]
    rows = read_rows(tmp_path / "out.jsonl")
    assert [c["latent"] for row in rows for c in row["chunks"]] == [
        expected_latent(c) for d in documents for c in d.chunks
    ]


@pytest.mark.parametrize("family_name", ["openai", "anthropic"])
def test_batch_orphaned_by_a_kill_before_its_id_was_recorded(family_name, tmp_path, monkeypatch):
    """The kill came after the provider accepted the batch and before bolt stored its id."""
    from bolt.teachers.api_teacher import ApiConfig, Prompt, api_teacher
    from bolt.teachers.cache import TeacherCache
    from bolt.teachers.chat import Sampling

    monkeypatch.setenv(KEY_VARIABLE[family_name], KEY)
    prompts = [Prompt([{"role": "user", "content": f"question {i}"}], "t1") for i in range(5)]
    with FakeLLMServer() as server:
        base = server.url + "/v1" if family_name == "openai" else server.url
        teacher = api_teacher(
            family_name,
            model="m",
            sampling=Sampling(32),
            config=ApiConfig(batch=True, poll_interval=0.0),
            base_url=base,
        )
        cache = TeacherCache(tmp_path / "cache.sqlite")
        keys = [key for key, _ in teacher.requests(prompts)]
        cache.begin_batch("orphan", teacher.name, keys)
        teacher.backend.submit_batch(list(teacher.requests(prompts)), "orphan")
        answers, failures = teacher.complete(prompts, cache)
    assert failures == {} and answers == [answer_text(item_of(f"question {i}")) for i in range(5)]
    # OpenAI batches carry our submission tag, so the orphan is found; Anthropic's cannot be, and are sent again.
    assert server.log.batches_created == (1 if family_name == "openai" else 2)


def test_a_rejected_batch_is_reported_not_resubmitted(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    make_chunks(tmp_path / "chunks.jsonl", documents=2, chunks=2)
    with FakeLLMServer(Faults(reject_batches=True)) as server:
        argv = api_args("openai", server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--batch")
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "rejected batch" in err and "model_not_found: no such model" in err
        assert server.log.batches_created == 1
        assert main(argv) == 2, "the rerun submits anew (the rejected batch is closed) and is rejected again"
        assert server.log.batches_created == 2


@pytest.mark.parametrize("batch", [False, True], ids=["online", "batch"])
def test_max_spend_stops_sending_at_the_cap_and_a_rerun_sends_only_the_rest(family, tmp_path, capsys, batch):
    """No request goes out once what was spent plus the worst case in flight would pass --max-spend;
    the run says so, keeps what it got, and a rerun without the cap sends only the unanswered ones."""
    documents = make_chunks(tmp_path / "chunks.jsonl")
    n_chunks = sum(len(d.chunks) for d in documents)
    (tmp_path / "prices.json").write_text(
        json.dumps({"test-model": {"input": 1000.0, "output": 1000.0}})
    )  # USD per 1M tokens: a request costs cents
    mode = ["--batch"] if batch else ["--concurrency", "2"]
    cap = ["--max-spend", "1.5", "--max-new-tokens", "256", "--pricing", str(tmp_path / "prices.json")]
    with FakeLLMServer(Faults(polls_to_finish=1)) as server:
        code = main(api_args(family, server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", *mode, *cap))
        err = capsys.readouterr().err
        assert code == 2 and "--max-spend reached" in err and "not sent" in err
        sent = len(server.log.answered)
        assert 0 < sent < n_chunks
        spend = json.loads((tmp_path / "out.jsonl.run" / "spend.json").read_text())["this_run"]
        assert 0 < spend["cost_usd"] <= 1.5
        summary = run_json(
            capsys,
            api_args(
                family,
                server,
                tmp_path / "chunks.jsonl",
                tmp_path / "out.jsonl",
                *mode,
                "--max-new-tokens",
                "256",
                "--pricing",
                str(tmp_path / "prices.json"),
            ),
        )
    assert len(server.log.answered) == n_chunks and set(server.log.answered.values()) == {1}, (
        "every chunk asked once over both runs"
    )
    assert summary["spend"]["this_run"]["requests"] == n_chunks - sent
    rows = read_rows(tmp_path / "out.jsonl")
    assert [[c["latent"] for c in row["chunks"]] for row in rows] == [
        [expected_latent(c) for c in d.chunks] for d in documents
    ]


def test_max_spend_needs_a_price_and_an_api_teacher(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    make_chunks(tmp_path / "chunks.jsonl")
    with FakeLLMServer(Faults()) as server:
        assert (
            main(api_args("openai", server, tmp_path / "chunks.jsonl", tmp_path / "out.jsonl", "--max-spend", "1")) == 2
        )
        assert "--max-spend needs the price of test-model" in capsys.readouterr().err
        assert (
            main(api_args("openai", server, tmp_path / "chunks.jsonl", tmp_path / "o2.jsonl", "--max-spend", "0")) == 2
        )
        assert "--max-spend must be a positive amount" in capsys.readouterr().err
        assert not server.log.answered
    assert (
        main(
            [
                "synthesize",
                str(tmp_path / "chunks.jsonl"),
                "-o",
                str(tmp_path / "o3.jsonl"),
                "--teacher",
                "oracle",
                "--max-spend",
                "1",
            ]
        )
        == 2
    )
    assert "--max-spend is for the API teachers" in capsys.readouterr().err
