"""Issue 25, items 3 and 4: the API key is never written or printed, and a server nobody answers for fails fast.

A fake server (``fake_llm_server``, ``echo_key``) quotes the key it was sent in the body and
headers of every error (400, 401, 429, 500, and 503 from the batch endpoints); the CLI runs in a
subprocess, as a user runs it, and every file under the test's directory, stdout and stderr
are scanned for the key. A closed local port stands for a server that is not running.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bolt.core.records import Chunk, Document, write_jsonl
from bolt.core.scrub import REDACTED, register, scrub, scrub_data, scrub_url
from bolt.errors import BoltError, EnvironmentFault

pytest.importorskip("openai")
pytest.importorskip("anthropic")

from fake_llm_server import FakeLLMServer, Faults, answer_text, item_of

KEY = f"sk-echo-{uuid.uuid4().hex}"
KEY_VARIABLE = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
FAST = ["--backoff", "0.001", "--request-timeout", "10", "--poll-interval", "0.01"]
SRC = str(Path(__file__).parents[1] / "src")


def make_chunks(path: Path, documents: int = 3, chunks: int = 2) -> None:
    write_jsonl(
        path,
        [
            Document(id=f"d{d}", chunks=[Chunk(text=f"Document {d}, sentence {c}.") for c in range(chunks)])
            for d in range(documents)
        ],
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bolt(argv: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str, str, float]:
    """Run ``bolt ARGV`` in a fresh process: exit code, stdout, stderr, seconds."""
    env = {**os.environ, "PYTHONPATH": SRC, **env}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bolt", *argv], env=env, capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - start


def holding(root: Path, secret: str) -> list[str]:
    return [
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


def synthesize_args(family: str, base_url: str, root: Path, *extra: str) -> list[str]:
    return [
        "synthesize",
        str(root / "chunks.jsonl"),
        "-o",
        str(root / "out" / "latents.jsonl"),
        "--teacher",
        family,
        "--teacher-model",
        "m",
        "--base-url",
        base_url,
        *FAST,
        *extra,
    ]


def server_url(server: FakeLLMServer, family: str) -> str:
    return server.url + "/v1" if family == "openai" else server.url


# --- the scrubber ------------------------------------------------------------------


def test_scrub_removes_keys_and_url_credentials(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key-0123456789")
    register("registered-key-abcdef", "none")
    text = (
        "env-key-0123456789 registered-key-abcdef given-key-xyz123 https://bob:hunter2hunter2@api.example.com/v1 "
        "http://tok3n-without-password@host:8000 env-key%2D0123456789 none"
    )
    out = scrub(text, "given-key-xyz123")
    for secret in (
        "env-key-0123456789",
        "registered-key-abcdef",
        "given-key-xyz123",
        "hunter2hunter2",
        "bob:",
        "tok3n",
    ):
        assert secret not in out
    assert out.endswith(" none"), "short values such as the placeholder key 'none' are not secrets"
    assert f"https://{REDACTED}@api.example.com/v1" in out and f"http://{REDACTED}@host:8000" in out
    assert scrub_url(None) is None and scrub_url("http://localhost:8000/v1") == "http://localhost:8000/v1"
    assert scrub_data({"base_url": "http://u:pass-word-1@h", "list": ["registered-key-abcdef", 3], "n": 1}) == {
        "base_url": f"http://{REDACTED}@h",
        "list": [REDACTED, 3],
        "n": 1,
    }


# --- nothing written or printed holds the key ----------------------------------------


ECHO_CASES = {
    "400": (Faults(kinds=("400",), fail_first=1, echo_key=True), []),
    "401": (Faults(kinds=("401",), fail_first=1, echo_key=True), []),
    "429": (Faults(kinds=("429",), fail_first=2, echo_key=True), ["--max-retries", "0"]),
    "500": (Faults(kinds=("500",), fail_first=2, echo_key=True), ["--max-retries", "0"]),
    "batch-503": (Faults(failing_batch_calls=100, echo_key=True), ["--batch", "--max-retries", "1"]),
}


@pytest.mark.parametrize("case", list(ECHO_CASES))
@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_a_server_echoing_the_key_gets_it_nowhere(family, case, tmp_path):
    faults, extra = ECHO_CASES[case]
    make_chunks(tmp_path / "chunks.jsonl")
    with FakeLLMServer(faults) as server:
        code, out, err, _ = bolt(
            synthesize_args(family, server_url(server, family), tmp_path, "--concurrency", "1", *extra),
            {KEY_VARIABLE[family]: KEY},
        )
    assert any(KEY in (key or "") for key in server.log.api_keys), "the server saw the key, so it could echo it"
    assert code in (0, 2), err
    if case in ("400", "429", "500"):
        assert code == 2 and (tmp_path / "out" / "latents.jsonl.run" / "failures.jsonl").read_text().strip(), (
            "the failures are recorded, without the key"
        )
    if case == "401":
        assert code == 2 and "retrying cannot fix" in err and REDACTED in err, (
            "the server's words are shown, the key cut out"
        )
    assert KEY not in out and KEY not in err
    assert holding(tmp_path, KEY) == []


@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_a_key_from_an_env_file_is_scrubbed_too(family, tmp_path):
    make_chunks(tmp_path / "chunks.jsonl", documents=2)
    secrets = tmp_path.parent / f"{tmp_path.name}-secrets"
    secrets.mkdir()
    (secrets / ".env").write_text(f"{KEY_VARIABLE[family]}={KEY}\n")
    env = {name: "" for name in KEY_VARIABLE.values()}
    with FakeLLMServer(Faults(kinds=("400",), fail_first=1, echo_key=True)) as server:
        code, out, err, _ = bolt(
            synthesize_args(
                family, server_url(server, family), tmp_path, "--concurrency", "1", "--env-file", str(secrets / ".env")
            ),
            env,
        )
    assert code == 2 and "1 request(s) got no usable answer" in err
    assert KEY not in out + err and holding(tmp_path, KEY) == []


@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_credentials_in_the_base_url_reach_no_file(family, tmp_path):
    make_chunks(tmp_path / "chunks.jsonl", documents=2)
    with FakeLLMServer() as server:
        url = server_url(server, family).replace("http://", f"http://user:{KEY}@")
        code, out, err, _ = bolt(
            synthesize_args(family, url, tmp_path), {KEY_VARIABLE[family]: "sk-the-real-key-000000"}
        )
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "latents.jsonl.run" / "manifest.json").read_text())
    assert manifest["config"]["teacher"]["base_url"] == server_url(server, family).replace(
        "http://", f"http://{REDACTED}@"
    )
    assert KEY not in out + err and holding(tmp_path, KEY) == []


# --- fail fast when nothing answers ----------------------------------------------------


@pytest.mark.parametrize("concurrency", ["8", "1"])
@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_a_closed_port_stops_the_run_within_seconds(family, concurrency, tmp_path):
    """36 requests to a closed port took 7 min 14 s before this breaker; now one line and exit 1 within seconds,
    with the default backoff (1 s, doubling), and the URL's credentials scrubbed from the line."""
    make_chunks(tmp_path / "chunks.jsonl", documents=18)
    url = f"http://user:{KEY}@127.0.0.1:{closed_port()}" + ("/v1" if family == "openai" else "")
    argv = [
        "synthesize",
        str(tmp_path / "chunks.jsonl"),
        "-o",
        str(tmp_path / "latents.jsonl"),
        "--teacher",
        family,
        "--teacher-model",
        "m",
        "--base-url",
        url,
        "--concurrency",
        concurrency,
    ]
    code, out, err, seconds = bolt(argv, {KEY_VARIABLE[family]: KEY}, timeout=60)
    assert code == 1, err
    assert seconds < 10, f"took {seconds:.1f} s"
    (line,) = err.strip().splitlines()
    assert (
        line.startswith("bolt synthesize: error: cannot reach the")
        and "connection refused" in line
        and "--base-url" in line
    )
    assert f"http://{REDACTED}@127.0.0.1:" in line
    assert out == "" and KEY not in err and holding(tmp_path, KEY) == []


def test_an_unresolvable_host_stops_the_run_within_seconds(tmp_path):
    make_chunks(tmp_path / "chunks.jsonl", documents=4)
    argv = [
        "synthesize",
        str(tmp_path / "chunks.jsonl"),
        "-o",
        str(tmp_path / "latents.jsonl"),
        "--teacher",
        "openai",
        "--teacher-model",
        "m",
        "--base-url",
        "http://no-such-host.invalid/v1",
    ]
    code, _, err, seconds = bolt(argv, {"OPENAI_API_KEY": KEY}, timeout=60)
    assert code == 1 and seconds < 10, err
    (line,) = err.strip().splitlines()
    assert "cannot reach the openai API at http://no-such-host.invalid/v1" in line


def test_a_closed_port_stops_batch_mode_too(tmp_path):
    make_chunks(tmp_path / "chunks.jsonl", documents=4)
    argv = [
        "synthesize",
        str(tmp_path / "chunks.jsonl"),
        "-o",
        str(tmp_path / "latents.jsonl"),
        "--teacher",
        "openai",
        "--teacher-model",
        "m",
        "--base-url",
        f"http://127.0.0.1:{closed_port()}/v1",
        "--batch",
    ]
    code, _, err, seconds = bolt(argv, {"OPENAI_API_KEY": KEY}, timeout=60)
    assert code == 1 and seconds < 10, err
    assert len(err.strip().splitlines()) == 1 and "cannot reach the openai API" in err


def test_a_server_that_dies_mid_run_keeps_its_answers_and_the_rerun_sends_only_the_rest(tmp_path, monkeypatch):
    """Once the server has answered, a streak of unreachable requests stops the run after ``outage_seconds``
    (not at once: the server may be restarting); every answer received is in the cache, and the rerun asks
    only for the rest."""
    from bolt.teachers.api_teacher import ApiConfig, Prompt, api_teacher
    from bolt.teachers.cache import TeacherCache
    from bolt.teachers.chat import Sampling

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    prompts = [Prompt([{"role": "user", "content": f"question {i}"}], "t1") for i in range(10)]
    config = ApiConfig(concurrency=1, backoff_base=0.01, outage_seconds=0.5, max_retries=1000)
    cache = TeacherCache(tmp_path / "cache.sqlite")
    server = FakeLLMServer().__enter__()
    teacher = api_teacher("openai", model="m", sampling=Sampling(32), config=config, base_url=server.url + "/v1")
    send, calls = teacher.backend.send, []

    def send_then_die(body):
        calls.append(time.monotonic())
        if len(calls) == 4:
            server.__exit__(None, None, None)  # the port closes: every later request is refused
        return send(body)

    teacher.backend.send = send_then_die
    with pytest.raises(EnvironmentFault, match=r"cannot reach the openai API .* after it had answered"):
        teacher.complete(prompts, cache)
    assert calls[-1] - calls[3] >= 0.4, "the streak had to last outage_seconds"
    answered = cache.get_many([key for key, _ in teacher.requests(prompts)])
    assert len(answered) == 3, "the three answers received before the server died are kept"
    with FakeLLMServer() as second:
        rerun = api_teacher("openai", model="m", sampling=Sampling(32), config=config, base_url=second.url + "/v1")
        answers, failures = rerun.complete(prompts, cache)
    assert failures == {} and answers == [answer_text(item_of(f"question {i}")) for i in range(10)]
    assert sum(second.log.seen.values()) == 7, "only the unanswered requests are sent again"


def test_429_and_5xx_keep_their_backoff(tmp_path, monkeypatch):
    """Only requests that reach no server trip the breaker: a server answering 429 and 503 for a while is waited for."""
    from bolt.teachers.api_teacher import ApiConfig, Prompt, api_teacher
    from bolt.teachers.cache import TeacherCache
    from bolt.teachers.chat import Sampling

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    prompts = [Prompt([{"role": "user", "content": f"question {i}"}], "t1") for i in range(3)]
    with FakeLLMServer(Faults(kinds=("429", "500"), fail_first=12, seed=1)) as server:
        teacher = api_teacher(
            "openai",
            model="m",
            sampling=Sampling(32),
            config=ApiConfig(concurrency=3, backoff_base=0.001, max_retries=20),
            base_url=server.url + "/v1",
        )
        answers, failures = teacher.complete(prompts, TeacherCache(tmp_path / "cache.sqlite"))
    assert failures == {} and all(answers)
    assert sum(teacher.spend.errors.values()) == 12


def test_environment_faults_exit_1_and_user_errors_2():
    assert (
        EnvironmentFault("x").exit_code == 1
        and BoltError("x").exit_code == 2
        and issubclass(EnvironmentFault, BoltError)
    )


# --- flags a teacher would ignore -------------------------------------------------------


@pytest.mark.parametrize("teacher", ["oracle", "hf", "vllm"])
@pytest.mark.parametrize("flags", [["--batch"], ["--base-url", "http://localhost:8000/v1"], ["--env-file", ".env"]])
def test_api_flags_with_a_local_teacher_are_refused(teacher, flags, tmp_path, capsys):
    from bolt.cli import main

    make_chunks(tmp_path / "chunks.jsonl")
    code = main(
        [
            "synthesize",
            str(tmp_path / "chunks.jsonl"),
            "-o",
            str(tmp_path / "latents.jsonl"),
            "--teacher",
            teacher,
            "--teacher-model",
            "m",
            *flags,
        ]
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2
        and line.startswith(f"bolt synthesize: error: {flags[0]} is for the API teachers")
        and f"drop {flags[0]}" in line
    )
    assert not (tmp_path / "latents.jsonl").exists() and not (tmp_path / "latents.jsonl.run").exists()


def test_a_server_that_never_accepts_trips_the_breaker_on_connect_timeouts(tmp_path, monkeypatch):
    """A port whose accept queue is full drops new connections: each request times out connecting
    (within CONNECT_TIMEOUT, not the whole request timeout), and three such in a row stop the run."""
    import bolt.teachers.chat as chat
    from bolt.teachers.api_teacher import ApiConfig, Prompt, api_teacher
    from bolt.teachers.cache import TeacherCache
    from bolt.teachers.chat import Sampling

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setattr(chat, "CONNECT_TIMEOUT", 0.5)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(8):  # fill the accept queue: later connections get no answer to their SYN
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    try:
        teacher = api_teacher(
            "openai",
            model="m",
            sampling=Sampling(32),
            config=ApiConfig(concurrency=4, backoff_base=0.001, timeout=60),
            base_url=f"http://127.0.0.1:{listener.getsockname()[1]}/v1",
        )
        start = time.monotonic()
        with pytest.raises(EnvironmentFault, match="connect timed out"):
            teacher.complete(
                [Prompt([{"role": "user", "content": f"q{i}"}], "t1") for i in range(8)],
                TeacherCache(tmp_path / "cache.sqlite"),
            )
        assert time.monotonic() - start < 10
    finally:
        for sock in (*fillers, listener):
            sock.close()
