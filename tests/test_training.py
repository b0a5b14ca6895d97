"""Training (the M-step): output directory, loss, exact resume, reruns, marker tokens, budgets, data checks,
window stream."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from window_recorder import record_windows

from bolt.core.layouts import TokenizedDocument
from bolt.core.modeling import byte_tokenizer, preset_model
from bolt.core.rundir import config_to_json, file_sha256
from bolt.core.special_tokens import LATENT_TOKENS, MarkerIds, add_latent_tokens
from bolt.errors import BoltError
from bolt.train import training
from bolt.train.training import TrainConfig, plan_steps, train, window_stream

BYTE_VOCAB = 259  # 256 bytes + <s>, </s>, <pad>


def metrics(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().split("\n") if line.strip()]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(directory / "model.safetensors")


def corpus_file(path: Path, texts: list[str]) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    return path


# --- the output directory -----------------------------------------------------------


def test_output_is_a_loadable_hf_directory_with_manifest_and_metrics(tiny_latents, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tiny_latents["warm_latents"]
    output = tmp_path / "model"
    config = TrainConfig(model="tiny", seq_len=64, batch_size=2, steps=3, lr=3e-3, checkpoint_every=2, log_every=1)
    summary = train(config, data, output)

    tokenizer = AutoTokenizer.from_pretrained(output)
    model = AutoModelForCausalLM.from_pretrained(output)
    marker_ids = []
    for token in LATENT_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, (token, ids)
        marker_ids.extend(ids)
    assert len(set(marker_ids)) == 4
    assert min(marker_ids) >= BYTE_VOCAB  # new ids, not bytes
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == BYTE_VOCAB + 4
    with torch.no_grad():
        logits = model(torch.tensor([[tokenizer.bos_token_id, *marker_ids, tokenizer.eos_token_id]])).logits
    assert logits.shape == (1, 6, len(tokenizer)) and torch.isfinite(logits).all()

    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["command"] == "train"
    assert manifest["config"] == config_to_json(config)
    assert {"python", "torch", "transformers"} <= set(manifest["versions"])
    assert manifest["inputs"]["data"]["sha256"] == file_sha256(data)
    assert manifest["summary"]["steps"] == summary["steps"] == 3

    logged = metrics(output)
    assert [row["step"] for row in logged] == [1, 2, 3]
    assert all(math.isfinite(row["loss"]) and row["loss"] > 0 for row in logged)
    assert logged[-1]["loss"] == pytest.approx(summary["final_loss"])
    assert (output / "model.safetensors").is_file()
    assert not (output / "checkpoints").exists()  # the step-2 checkpoint is cleaned up


def test_loss_goes_down(tiny_latents, tmp_path):
    config = TrainConfig(model="tiny", seq_len=128, batch_size=4, steps=40, lr=3e-3, log_every=5)
    summary = train(config, tiny_latents["warm_latents"], tmp_path / "model")
    losses = [row["loss"] for row in metrics(tmp_path / "model")]
    assert len(losses) == 8
    # Random init starts near ln(263) = 5.6 nats; byte-level toy text is far easier than that.
    assert losses[-1] < losses[0] - 1.0, losses
    assert summary["final_loss"] == pytest.approx(losses[-1])


# --- resume -------------------------------------------------------------------------


def test_interrupted_run_resumes_exactly(tiny_latents, tmp_path, monkeypatch):
    data = tiny_latents["warm_latents"]
    config = dict(model="tiny", seq_len=64, batch_size=2, steps=8, lr=3e-3, checkpoint_every=4, log_every=1)
    windows_per_step = 2

    a = tmp_path / "a"
    train(TrainConfig(**config), data, a)

    real_stream = training.window_stream
    armed = {"on": True}

    def interrupting_stream(documents, cfg, markers):
        for index, window in enumerate(real_stream(documents, cfg, markers)):
            if armed["on"] and index == 5 * windows_per_step:  # step 5 done, asking for step 6's first window
                armed["on"] = False
                raise KeyboardInterrupt
            yield window

    monkeypatch.setattr(training, "window_stream", interrupting_stream)
    b = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config), data, b)
    assert (
        json.loads((b / "manifest.json").read_text())["status"] == "interrupted"
    )  # issue 23: the manifest says why it stopped
    assert (b / "checkpoints" / "step-0000004" / "state.json").is_file()
    assert not (b / "model.safetensors").exists()

    train(TrainConfig(**config), data, b)
    assert not armed["on"]
    assert json.loads((b / "manifest.json").read_text())["status"] == "complete"
    assert not (b / "checkpoints").exists()

    # The rerun continued from the step-4 checkpoint: it logged steps 5..8, not 1..8 again, and the
    # interrupted run's step 5 (past the checkpoint) was dropped, so each step is logged once.
    assert [row["step"] for row in metrics(b)] == [1, 2, 3, 4, 5, 6, 7, 8]
    loss_a = {row["step"]: row["loss"] for row in metrics(a)}
    loss_b = {row["step"]: row["loss"] for row in metrics(b)}
    for step in range(1, 9):
        assert loss_b[step] == pytest.approx(loss_a[step], rel=1e-6, abs=1e-6), step

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-6), name


def test_rerunning_a_completed_training_does_not_train_again(tiny_latents, tmp_path, monkeypatch):
    data = tiny_latents["warm_latents"]
    output = tmp_path / "model"
    config = TrainConfig(model="tiny", seq_len=64, batch_size=2, steps=2, lr=3e-3, log_every=1)
    first = train(config, data, output)
    mtime = (output / "model.safetensors").stat().st_mtime_ns
    lines = len(metrics(output))

    def no_training(*args, **kwargs):
        raise AssertionError("a completed run must not train again")

    monkeypatch.setattr(training, "window_stream", no_training)
    again = train(TrainConfig(model="tiny", seq_len=64, batch_size=2, steps=2, lr=3e-3, log_every=1), data, output)
    assert again == json.loads((output / "manifest.json").read_text())["summary"]
    assert again["steps"] == first["steps"] and again["final_loss"] == pytest.approx(first["final_loss"])
    assert (output / "model.safetensors").stat().st_mtime_ns == mtime
    assert len(metrics(output)) == lines


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.cuda.is_available() and training.cpp_compiler() is None,
    reason="torch.compile on a CPU needs a C++ compiler",
)
def test_compiled_training_takes_the_same_steps_and_is_not_part_of_the_runs_identity(
    tiny_latents, tmp_path, monkeypatch
):
    from torch._dynamo.utils import counters

    data = tiny_latents["warm_latents"]
    config = TrainConfig(model="tiny", seq_len=64, batch_size=2, steps=3, lr=3e-3, log_every=1)
    eager = train(config, data, tmp_path / "eager")
    torch._dynamo.reset()
    counters.clear()
    compiled = train(config, data, tmp_path / "compiled", compile=True)
    assert counters["stats"]["unique_graphs"] >= 1, "the training steps did not go through torch.compile"
    assert (eager["compiled"], compiled["compiled"]) == (False, True)
    # same model, optimiser and batches, other kernels: equal up to float rounding
    assert [row["loss"] for row in metrics(tmp_path / "compiled")] == pytest.approx(
        [row["loss"] for row in metrics(tmp_path / "eager")], rel=1e-4
    )
    we, wc = weights(tmp_path / "eager"), weights(tmp_path / "compiled")
    assert we.keys() == wc.keys()  # a plain HF directory, no compile wrapper's prefixes
    for name in we:
        assert torch.allclose(we[name], wc[name], atol=1e-4), name
    assert json.loads((tmp_path / "compiled" / "manifest.json").read_text())["config"] == config_to_json(config)

    def no_training(*args, **kwargs):
        raise AssertionError("a completed run must not train again when only compile changes")

    monkeypatch.setattr(training, "window_stream", no_training)
    assert train(config, data, tmp_path / "compiled")["compiled"] is True


def test_compile_without_a_cpp_compiler_is_refused_before_any_work(tiny_latents, tmp_path, monkeypatch):
    monkeypatch.setattr(training.shutil, "which", lambda name: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BoltError, match="needs a C\\+\\+ compiler"):
        train(
            TrainConfig(model="tiny", seq_len=64, batch_size=2, steps=1),
            tiny_latents["warm_latents"],
            tmp_path / "model",
            compile=True,
        )
    assert not (tmp_path / "model").exists()


def test_rerun_with_another_config_needs_overwrite_and_changed_data_trains_again(tiny_latents, tmp_path):
    output = tmp_path / "model"
    data = tmp_path / "latents.jsonl"
    data.write_bytes(tiny_latents["warm_latents"].read_bytes())
    base = dict(model="tiny", seq_len=64, batch_size=2, lr=3e-3, log_every=1)
    train(TrainConfig(**base, steps=2), data, output)

    with pytest.raises(BoltError, match=r"another config.*--overwrite"):
        train(TrainConfig(**base, steps=3), data, output)
    full = train(TrainConfig(**base, steps=3), data, output, overwrite=True)
    assert full["steps"] == 3
    logged = [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3], "metrics of the earlier, different run must not stay in the file"

    # Same config, other data: the stored model was not trained on this file and must not be reused.
    rows = data.read_text().splitlines()
    data.write_text("\n".join(rows[: len(rows) // 2]) + "\n")
    mtime = (output / "model.safetensors").stat().st_mtime_ns
    summary = train(TrainConfig(**base, steps=3), data, output)
    assert (output / "model.safetensors").stat().st_mtime_ns != mtime
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["inputs"]["data"]["sha256"] == file_sha256(data)
    assert manifest["summary"] == summary
    assert summary["tokens_per_epoch"] < full["tokens_per_epoch"]


# --- latent marker tokens -----------------------------------------------------------


def _saved_plain_model(directory: Path):
    """A tiny preset and the byte tokenizer saved as an HF directory, without the markers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = preset_model("tiny", seed=3)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return AutoModelForCausalLM.from_pretrained(directory), AutoTokenizer.from_pretrained(directory)


def _check_new_rows(weight: torch.Tensor, old: torch.Tensor) -> None:
    d = weight.shape[1]
    assert weight.shape[0] == old.shape[0] + 4
    assert torch.equal(weight[: old.shape[0]], old), "existing rows must not change"
    new = weight[old.shape[0] :]
    bound = 3 / math.sqrt(d)
    assert new.abs().max().item() <= bound * (1 + 1e-6)
    std = new.std().item()
    assert 0.75 / math.sqrt(d) < std < 1.25 / math.sqrt(d), std
    assert abs(new.mean().item()) < 0.5 / math.sqrt(d)


def test_add_latent_tokens_initialises_new_rows_small(tmp_path):
    model, tokenizer = _saved_plain_model(tmp_path / "plain")
    assert not model.config.tie_word_embeddings
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    assert old_in.shape[0] == len(tokenizer) == BYTE_VOCAB

    assert add_latent_tokens(tokenizer, model) == 4
    assert len(tokenizer) == BYTE_VOCAB + 4
    for token in LATENT_TOKENS:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    _check_new_rows(model.get_input_embeddings().weight.detach(), old_in)
    _check_new_rows(model.get_output_embeddings().weight.detach(), old_out)
    # Input and output rows are drawn separately, not copied.
    assert not torch.equal(
        model.get_input_embeddings().weight[BYTE_VOCAB:], model.get_output_embeddings().weight[BYTE_VOCAB:]
    )

    after_in = model.get_input_embeddings().weight.detach().clone()
    after_out = model.get_output_embeddings().weight.detach().clone()
    assert add_latent_tokens(tokenizer, model) == 0
    assert len(tokenizer) == BYTE_VOCAB + 4
    assert torch.equal(model.get_input_embeddings().weight, after_in)
    assert torch.equal(model.get_output_embeddings().weight, after_out)


def test_add_latent_tokens_on_a_trained_model_adds_nothing(tiny_trained_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_trained_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_trained_model)
    before = model.get_input_embeddings().weight.detach().clone()
    assert add_latent_tokens(tokenizer, model) == 0
    assert torch.equal(model.get_input_embeddings().weight, before)


def test_add_latent_tokens_keeps_tied_embeddings_tied():
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=True,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    old = model.get_input_embeddings().weight.detach().clone()

    assert add_latent_tokens(tokenizer, model) == 4
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert head.shape == embed.shape == (BYTE_VOCAB + 4, 64)
    assert head.data_ptr() == embed.data_ptr(), "the output embedding must stay tied to the input embedding"
    _check_new_rows(embed.detach(), old)


# --- budgets and validation ---------------------------------------------------------


def test_plan_steps_from_each_budget():
    # seq_len 100, 2 windows per step -> 200 tokens per step
    assert plan_steps(TrainConfig(seq_len=100, steps=7), tokens_per_epoch=10_000, windows_per_step=2) == 7
    assert plan_steps(TrainConfig(seq_len=100, tokens=1000), tokens_per_epoch=10_000, windows_per_step=2) == 5
    assert (
        plan_steps(TrainConfig(seq_len=100, tokens=1001), tokens_per_epoch=10_000, windows_per_step=2) == 6
    )  # rounds up
    assert plan_steps(TrainConfig(seq_len=100, epochs=2.0), tokens_per_epoch=1000, windows_per_step=2) == 10
    assert plan_steps(TrainConfig(seq_len=100, epochs=0.5), tokens_per_epoch=1000, windows_per_step=2) == 3
    assert plan_steps(TrainConfig(seq_len=100), tokens_per_epoch=1000, windows_per_step=2) == 5  # default: one epoch
    assert plan_steps(TrainConfig(seq_len=100), tokens_per_epoch=10, windows_per_step=2) == 1  # never zero


@pytest.mark.parametrize(
    ("fields", "flags"),
    [
        (dict(steps=5, tokens=100), ["--steps", "--tokens"]),
        (dict(tokens=100, epochs=1.0), ["--tokens", "--epochs"]),
        (dict(steps=5, epochs=1.0), ["--steps", "--epochs"]),
        (dict(layout="sideways"), ["--layout", "sideways"]),
        (dict(raw_ratio=1.5), ["--raw-ratio"]),
        (dict(raw_ratio=-0.1), ["--raw-ratio"]),
        (dict(precision="fp8"), ["--precision", "fp8"]),
        (dict(steps=0), ["--steps"]),
        (dict(seq_len=1), ["--seq-len"]),
    ],
)
def test_validate_rejects_bad_config_naming_the_flag(fields, flags):
    with pytest.raises(BoltError) as info:
        TrainConfig(**fields).validate()
    for flag in flags:
        assert flag in str(info.value)


@pytest.mark.parametrize(
    "fields",
    [
        dict(raw_ratio=0.0),
        dict(raw_ratio=1.0),
        dict(layout="raw", precision="bf16", epochs=0.5),
        dict(tokens=10),
        dict(precision="auto"),
    ],
)
def test_validate_accepts_good_config(fields):
    TrainConfig(**fields).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on GPUs auto follows torch.cuda.is_bf16_supported")
@pytest.mark.parametrize(("bf16_faster", "expected"), [(True, "bf16"), (False, "no")])
def test_auto_precision_trains_in_bf16_only_where_the_cpu_computes_it_faster(
    tiny_latents, tmp_path, monkeypatch, bf16_faster, expected
):
    monkeypatch.setattr(training, "cpu_bf16_is_faster", lambda: bf16_faster)
    for explicit in ("no", "bf16", "fp16"):
        assert training.resolve_precision(explicit) == explicit
    assert training.resolve_precision("auto") == expected
    summary = train(
        TrainConfig(model="tiny", layout="raw", seq_len=64, batch_size=2, steps=1, precision="auto"),
        tiny_latents["warm"],
        tmp_path / "model",
    )
    assert summary["mixed_precision"] == expected
    assert json.loads((tmp_path / "model" / "manifest.json").read_text())["config"]["precision"] == "auto"


# --- which data a layout accepts ----------------------------------------------------


@pytest.mark.parametrize("source", ["warm", "bootstrap_chunks"])
def test_raw_layout_trains_on_plain_corpus_and_chunks(tiny_latents, tmp_path, monkeypatch, source):
    windows = record_windows(monkeypatch)
    data = tiny_latents[source]
    summary = train(
        TrainConfig(model="tiny", layout="raw", seq_len=64, batch_size=2, steps=2), data, tmp_path / "model"
    )
    assert summary["steps"] == 2
    assert (tmp_path / "model" / "config.json").is_file()
    assert len(windows) == 4 and all(len(w) == 64 for w in windows)
    assert max(max(w) for w in windows) < BYTE_VOCAB, "raw layout must not put latent markers in the text"
    # Byte tokenizer: one token per UTF-8 byte, plus BOS and EOS per document.
    if source == "warm":
        texts = [json.loads(line)["text"] for line in data.read_text().splitlines()]
    else:
        texts = ["".join(c["text"] for c in json.loads(line)["chunks"]) for line in data.read_text().splitlines()]
    assert summary["tokens_per_epoch"] == sum(len(t.encode("utf-8")) + 2 for t in texts)


def test_random_layout_puts_markers_in_the_windows(tiny_latents, tmp_path, monkeypatch):
    windows = record_windows(monkeypatch)
    train(
        TrainConfig(model="tiny", seq_len=64, batch_size=2, steps=1), tiny_latents["warm_latents"], tmp_path / "model"
    )
    assert any(token >= BYTE_VOCAB for window in windows for token in window)


def test_latent_layout_on_plain_corpus_points_to_synthesize(tiny_latents, tmp_path):
    output = tmp_path / "model"
    with pytest.raises(BoltError) as info:
        train(
            TrainConfig(model="tiny", layout="random", seq_len=64, batch_size=2, steps=1), tiny_latents["warm"], output
        )
    message = str(info.value)
    assert "bolt synthesize" in message and str(tiny_latents["warm"]) in message and "--layout raw" in message
    assert not (output / "model.safetensors").exists()


def test_chunks_without_latents_need_raw_layout(tiny_latents, tmp_path):
    with pytest.raises(BoltError) as info:
        train(
            TrainConfig(model="tiny", layout="joint", seq_len=64, batch_size=2, steps=1),
            tiny_latents["bootstrap_chunks"],
            tmp_path / "m",
        )
    assert "latent" in str(info.value) and "--layout raw" in str(info.value)


def test_seq_len_longer_than_the_data_is_a_clear_error(tmp_path):
    data = corpus_file(tmp_path / "small.jsonl", ["Just one short sentence."])
    with pytest.raises(BoltError) as info:
        train(TrainConfig(model="tiny", layout="raw", seq_len=1024, batch_size=1, steps=1), data, tmp_path / "m")
    message = str(info.value)
    assert "--seq-len 1024" in message and "fewer than one" in message and str(data) in message
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_seq_len_longer_than_the_context_window_is_a_clear_error(tmp_path):
    data = corpus_file(tmp_path / "small.jsonl", ["Just one short sentence."])
    with pytest.raises(BoltError, match="context window"):
        train(TrainConfig(model="tiny", layout="raw", seq_len=8192, batch_size=1, steps=1), data, tmp_path / "m")


# --- the window stream --------------------------------------------------------------

MARKERS = MarkerIds(sol=900, eol=901, prior=902, post=903, bos=998, eos=999)


def _documents(n: int, length: int) -> list[TokenizedDocument]:
    """Documents whose tokens name them: document i is ``[i*10+1, ..., i*10+length]``."""
    return [
        TokenizedDocument(id=f"d{i}", texts=[[i * 10 + j for j in range(1, length + 1)]], latents=None)
        for i in range(n)
    ]


def _take(stream, n):
    return [next(stream) for _ in range(n)]


def test_windows_have_exactly_seq_len_tokens_and_lose_nothing():
    documents = _documents(12, 6)  # each renders to BOS + 6 + EOS = 8 tokens
    config = TrainConfig(layout="raw", seq_len=5, seed=1)
    windows = _take(window_stream(documents, config, MARKERS), 40)  # 200 tokens > two epochs of 96
    assert all(len(w) == 5 for w in windows)
    flat = [t for w in windows for t in w]
    for epoch in range(2):
        rendered = [flat[epoch * 96 + 8 * i : epoch * 96 + 8 * (i + 1)] for i in range(12)]
        assert sorted(rendered) == sorted([998, *d.texts[0], 999] for d in documents), (
            f"epoch {epoch} is not every document once"
        )


def test_every_epoch_reshuffles_document_order():
    documents = _documents(12, 6)
    config = TrainConfig(layout="raw", seq_len=8, seed=0)
    windows = _take(window_stream(documents, config, MARKERS), 36)
    order = [w[1] // 10 for w in windows]  # one document per window
    epochs = [order[0:12], order[12:24], order[24:36]]
    for epoch in epochs:
        assert sorted(epoch) == list(range(12))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
    assert windows[0] != windows[12]
    # The stream is a pure function of (data, config): what a resumed run replays.
    assert _take(window_stream(documents, config, MARKERS), 36) == windows
    other_seed = TrainConfig(layout="raw", seq_len=8, seed=1)
    assert _take(window_stream(documents, other_seed, MARKERS), 36) != windows


def test_random_layout_redraws_coins_every_epoch():
    chunks = [[100 + i, 200 + i] for i in range(16)]
    latents = [[300 + i] for i in range(16)]
    document = TokenizedDocument(id="only", texts=chunks, latents=latents)
    config = TrainConfig(layout="random", seq_len=7, seed=0)
    flat = [t for w in _take(window_stream([document], config, MARKERS), 60) for t in w]
    renders = []
    start = 0
    while len(renders) < 3:
        end = flat.index(MARKERS.eos, start)
        renders.append(flat[start : end + 1])
        start = end + 1
    for render in renders:
        assert render[0] == MARKERS.bos
        joint = sum(1 for i in range(len(render) - 1) if render[i] == MARKERS.sol and render[i + 1] == MARKERS.prior)
        posterior = render.count(MARKERS.post)
        assert joint + posterior == 16 and joint > 0 and posterior > 0
    assert renders[0] != renders[1] and renders[1] != renders[2]


def test_report_to_tensorboard_logs_every_logged_step_and_is_not_part_of_the_runs_identity(
    tiny_latents, tmp_path, monkeypatch
):
    pytest.importorskip("tensorboard", reason="tensorboard is part of the test extra: pip install -e '.[test]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TrainConfig(model="tiny", seq_len=64, batch_size=2, steps=6, lr=3e-3, log_every=2)
    summary = train(config, tiny_latents["warm_latents"], tmp_path / "run", report_to="tensorboard")
    events = [path for path in (tmp_path / "run" / "tracking").rglob("events.out.tfevents.*")]
    assert events, "TensorBoard wrote no event file"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    losses = accumulator.Scalars("loss")
    assert [event.step for event in losses] == [2, 4, 6] and losses[-1].value == pytest.approx(
        summary["final_loss"], rel=1e-5
    )
    assert {"lr", "tokens_per_second"} <= set(accumulator.Tags()["scalars"])
    monkeypatch.setattr(
        training, "_train", lambda *a, **k: pytest.fail("a finished run was trained again for --report-to")
    )
    assert train(config, tiny_latents["warm_latents"], tmp_path / "run")["final_loss"] == summary["final_loss"]
    with pytest.raises(BoltError, match="unknown --report-to tensorbored"):
        train(config, tiny_latents["warm_latents"], tmp_path / "other", report_to="tensorbored")


def test_gradient_checkpointing_takes_the_same_steps_and_is_not_part_of_the_runs_identity(
    tiny_latents, tmp_path, monkeypatch
):
    config = TrainConfig(model="tiny", seq_len=64, batch_size=2, steps=4, lr=3e-3, log_every=1)
    plain = train(config, tiny_latents["warm_latents"], tmp_path / "plain")
    checkpointed = train(config, tiny_latents["warm_latents"], tmp_path / "checkpointed", gradient_checkpointing=True)
    assert [m["loss"] for m in metrics(tmp_path / "checkpointed")] == pytest.approx(
        [m["loss"] for m in metrics(tmp_path / "plain")], abs=1e-5
    )
    assert checkpointed["final_loss"] == pytest.approx(plain["final_loss"], abs=1e-5)
    monkeypatch.setattr(
        training, "_train", lambda *a, **k: pytest.fail("a finished run was trained again for --gradient-checkpointing")
    )
    train(config, tiny_latents["warm_latents"], tmp_path / "plain", gradient_checkpointing=True)


def test_a_training_that_will_not_fit_is_warned_about_before_the_first_step(tiny_latents, tmp_path, monkeypatch):
    model, _ = preset_model("tiny")
    plain = training.training_memory_bytes(model, 8, 2048)
    assert (
        training.training_memory_bytes(model, 8, 2048, gradient_checkpointing=True)
        < plain
        < training.training_memory_bytes(model, 16, 2048)
    )
    monkeypatch.setattr(training, "available_memory_bytes", lambda device: 1024)  # a machine with 1 KiB free
    config = TrainConfig(model="tiny", seq_len=64, batch_size=2, steps=2, lr=3e-3)
    with pytest.warns(UserWarning, match=r"needs about .* GiB .* will likely run out of memory; lower --batch-size"):
        train(config, tiny_latents["warm_latents"], tmp_path / "warned")
    with pytest.raises(BoltError, match="--strict makes this an error"):
        train(config, tiny_latents["warm_latents"], tmp_path / "refused", strict=True)
    assert not (tmp_path / "refused" / "model.safetensors").exists()
