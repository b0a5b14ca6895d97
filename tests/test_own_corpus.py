"""Issue 23: a user's own corpus and model without traps: models by name or path, quality warnings
(and ``--strict``), ``bolt em``'s flags, a baseline of the base model, ``--limit``, failed manifests, log progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bolt.cli import main
from bolt.errors import BoltError
from bolt.modeling import model_path, preset_model

REVISION = "0123456789abcdef0123456789abcdef01234567"


def save_tiny(directory: Path) -> Path:
    model, tokenizer = preset_model("tiny", seed=0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face hub cache laid out as huggingface_hub does: models--org--name/{snapshots/REV/..., refs/main}."""
    home = tmp_path / "hf-home"
    repo = home / "hub" / "models--testorg--tiny-llama"
    save_tiny(repo / "snapshots" / REVISION)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local directory named testorg
    return repo


# --- 1. models by name or path ------------------------------------------------------


def test_local_directory_is_taken_as_it_is(tmp_path):
    directory = save_tiny(tmp_path / "my-model")
    assert model_path(str(directory)) == directory
    from bolt.modeling import load_model, load_tokenizer

    assert load_tokenizer(directory).eos_token == "</s>"
    assert load_model(directory).config.hidden_size == 64


def test_hub_id_loads_from_the_cache_offline(hub_cache, monkeypatch):
    from bolt.modeling import load_model, load_tokenizer, model_fingerprint

    snapshot = hub_cache / "snapshots" / REVISION
    assert model_path("testorg/tiny-llama") == snapshot
    assert model_path("testorg/tiny-llama", revision=REVISION) == snapshot
    assert load_model("testorg/tiny-llama").config.hidden_size == 64
    assert load_tokenizer("testorg/tiny-llama").eos_token == "</s>"
    assert model_fingerprint("testorg/tiny-llama") == model_fingerprint(snapshot)
    # HF_HUB_CACHE wins over HF_HOME, as in huggingface_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache.parent))
    monkeypatch.setenv("HF_HOME", "/nonexistent")
    assert model_path("testorg/tiny-llama") == snapshot


def test_hub_id_through_the_cli(hub_cache, tiny_latents, capsys):
    out = hub_cache.parent.parent.parent / "trained"
    code = main(["train", str(tiny_latents["warm_latents"]), "--model", "testorg/tiny-llama", "--steps", "1", "--seq-len", "64", "--batch-size", "2", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert REVISION in json.dumps(manifest["config"])
    assert (out / "config.json").is_file()


def test_hub_id_neither_cached_nor_reachable_is_one_line(hub_cache, tiny_latents, capsys):
    code = main(["estep", str(tiny_latents["bootstrap_chunks"]), "--model", "testorg/not-there", "-o", "l.jsonl"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "testorg/not-there" in err and "hf download testorg/not-there" in err and "HF_HUB_OFFLINE" in err and "local model directory" in err


def test_unknown_revision_offline_names_it(hub_cache, capsys):
    with pytest.raises(BoltError, match="revision v9"):
        model_path("testorg/tiny-llama", revision="v9")


def test_teacher_model_by_hub_id(hub_cache, tiny_latents, capsys):
    out = hub_cache.parent.parent.parent / "latents.jsonl"
    code = main(["synthesize", str(tiny_latents["bootstrap_chunks"]), "--teacher", "hf", "--teacher-model", "testorg/tiny-llama", "--max-new-tokens", "4", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert out.is_file()


def test_missing_local_path_keeps_its_message(tmp_path, capsys):
    code = main(["estep", "x.jsonl", "--model", str(tmp_path / "nomodel"), "-o", str(tmp_path / "l.jsonl")])
    assert code == 2
    assert "no such model directory" in capsys.readouterr().err
