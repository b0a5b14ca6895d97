"""``--config FILE.yaml`` on every command, and the ``config.yaml`` every run leaves in its run directory."""

from __future__ import annotations

import json

import pytest
import yaml

from bolt.cli import main

CORPUS = [{"id": f"d{i}", "text": " ".join(f"Sentence {i}.{j} is here." for j in range(12))} for i in range(3)]


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in CORPUS))
    return path


def _manifest_config(output):
    return json.loads((output.parent / (output.name + ".run") / "manifest.json").read_text())["config"]


def test_options_from_a_file_run_as_the_same_flags(corpus, tmp_path, capsys):
    assert main(["chunk", str(corpus), "-o", str(tmp_path / "flags.jsonl"), "--mean-units", "3", "--seed", "5"]) == 0
    (tmp_path / "options.yaml").write_text("mean_units: 3\nseed: 5\n")
    assert main(["chunk", str(corpus), "-o", str(tmp_path / "file.jsonl"), "--config", "options.yaml"]) == 0
    assert (tmp_path / "flags.jsonl").read_bytes() == (tmp_path / "file.jsonl").read_bytes()
    assert _manifest_config(tmp_path / "flags.jsonl")["chunk"] == _manifest_config(tmp_path / "file.jsonl")["chunk"]


def test_a_flag_on_the_command_line_wins_over_the_file(corpus, tmp_path):
    (tmp_path / "options.yaml").write_text("command: chunk\nmean-units: 3\nseed: 5\n")
    assert main(["chunk", str(corpus), "-o", "out.jsonl", "--config", "options.yaml", "--seed", "7"]) == 0
    written = yaml.safe_load((tmp_path / "out.jsonl.run" / "config.yaml").read_text())
    assert written["seed"] == 7 and written["mean-units"] == 3.0


def test_a_run_s_config_yaml_runs_it_again(corpus, tmp_path):
    assert main(["chunk", str(corpus), "-o", "first.jsonl", "--mean-units", "2", "--uniform"]) == 0
    written = yaml.safe_load((tmp_path / "first.jsonl.run" / "config.yaml").read_text())
    assert written["command"] == "chunk" and written["input"] == str(corpus) and written["uniform"] is True
    assert "overwrite" not in written and "config" not in written
    # the whole command, positionals included, comes from the file; only the output is renamed
    assert main(["chunk", "--config", "first.jsonl.run/config.yaml", "-o", "second.jsonl"]) == 0
    assert (tmp_path / "first.jsonl").read_bytes() == (tmp_path / "second.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1\n", "unknown option(s) bogus for `bolt chunk`; known: dataset-config, input"),
        ("command: train\n", "is a config of `bolt train`, not of `bolt chunk`"),
        ("- 1\n- 2\n", "holds a list; it must be a mapping"),
        ("uniform: 3\n", "uniform is a switch; give true or false"),
        ("mean-units: [\n", "not a readable YAML file"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_problem(corpus, tmp_path, capsys, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    assert main(["chunk", str(corpus), "-o", "out.jsonl", "--config", "bad.yaml"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out.jsonl").exists()


def test_a_missing_config_file_is_named(corpus, tmp_path, capsys):
    assert main(["chunk", str(corpus), "-o", "out.jsonl", "--config", "nowhere.yaml"]) == 2
    assert "--config nowhere.yaml: no such file" in capsys.readouterr().err


def test_choices_are_checked_in_the_file_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("layout: sideways\n")
    assert main(["train", "data.jsonl", "-o", "m", "--config", "bad.yaml"]) == 2
    assert "layout: 'sideways' is not one of random, joint" in capsys.readouterr().err
