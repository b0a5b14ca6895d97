"""Flags made from config dataclasses: names, types, defaults and help come from the config."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

import pytest

from bolt.cli import TRAIN_FIELDS, build_parser
from bolt.cli_fields import add_fields, field_docs, from_flags
from bolt.train.config import TrainConfig


@dataclasses.dataclass
class Example:
    size: int = 3
    """How many."""
    mode: Literal["fast", "exact"] = "exact"
    """Which way."""
    limit: float | None = None
    """At most this."""
    quiet: bool = False
    """Say less."""
    loud: bool = True
    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 4])
    """K values."""


def _parser(defaults: Example) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="example")
    add_fields(parser, defaults, [f.name for f in dataclasses.fields(Example)], aliases={"size": ["-s"]})
    return parser


def test_docstrings_under_fields_are_read():
    assert field_docs(Example) == {
        "size": "How many.",
        "mode": "Which way.",
        "limit": "At most this.",
        "quiet": "Say less.",
        "ks": "K values.",
    }


def test_types_become_flags_and_back():
    parser = _parser(Example())
    args = parser.parse_args(["-s", "5", "--mode", "fast", "--limit", "0.5", "--quiet", "--no-loud", "--ks", "1,2,3"])
    assert from_flags(Example(), args, vars(args)) == Example(
        size=5, mode="fast", limit=0.5, quiet=True, loud=False, ks=[1, 2, 3]
    )
    assert from_flags(Example(), parser.parse_args([]), ["size", "ks"]) == Example()


def test_the_instance_given_sets_the_defaults_and_the_help_shows_them():
    parser = _parser(Example(size=7))
    assert parser.parse_args([]).size == 7
    text = " ".join(parser.format_help().split())
    assert (
        "how many (default: 7)" in text and "which way (default: exact)" in text and "K values (default: 1,4)" in text
    )


@pytest.mark.parametrize(
    ("argv", "message"), [(["--mode", "slow"], "invalid choice: 'slow'"), (["--ks", "1,x"], "int")]
)
def test_bad_values_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        _parser(Example()).parse_args(argv)
    assert message in capsys.readouterr().err


def test_bolt_train_takes_its_flags_from_train_config():
    """Every TrainConfig flag of `bolt train` has the config's default and a help text."""
    (train,) = [
        action.choices["train"] for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
    ]
    actions = {action.dest: action for action in train._actions}
    for name in TRAIN_FIELDS:
        assert actions[name].default == getattr(TrainConfig(), name), name
        assert actions[name].help and not actions[name].help.startswith("default"), name
    assert set(field_docs(TrainConfig)) >= set(TRAIN_FIELDS)
