"""Command-line flags made from a config dataclass: its field names, types, defaults and docstrings.

A config documents each field once (a docstring under it); ``add_fields`` turns the fields a
command exposes into argparse flags (``seq_len`` -> ``--seq-len``, a ``Literal`` -> its choices,
``bool`` -> a switch, ``X | None`` -> optional, ``list[int]`` -> comma-separated), with that
docstring as the help and the default of the instance given (a command may default differently
from the dataclass, as ``bolt em`` does for its trainings). ``from_flags`` builds the config back.

argparse stays the parser (its error messages, short options and the pinned CLI surface are
bolt's public interface); only the declarations come from the configs.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body), whitespace collapsed."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def comma_list(kind: type) -> typing.Callable[[str], list]:
    noun = {int: "integers", float: "numbers"}.get(kind, f"{kind.__name__} values")

    def parse(text: str) -> list:
        try:
            return [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes comma-separated {noun}, got {text!r}") from None

    parse.__name__ = f"{kind.__name__} list"
    return parse


def _argument(hint: Any, default: Any) -> dict[str, Any]:
    """argparse keywords for a field of type ``hint``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction if default else "store_true"}
    if typing.get_origin(hint) is Literal:
        return {"choices": args}
    if typing.get_origin(hint) is list:
        return {"type": comma_list(args[0]), "metavar": f"{args[0].__name__.upper()},..."}
    if hint in (int, float, str, Path):
        return {"type": hint}
    raise TypeError(f"no flag for a field of type {hint!r}")


def _help_style(doc: str) -> str:
    """A docstring as the CLI's help reads: no closing period, a lower-case first word unless it is a
    name (HF, AdamW, K)."""
    text = doc[:-1] if doc.endswith(".") and not doc.endswith("...") else doc
    first = text.split(" ", 1)[0]
    if first == "A" or (len(first) > 1 and first[0].isupper() and first[1:].islower()):
        text = text[0].lower() + text[1:]
    return text


def add_fields(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    defaults: Any,
    names: Iterable[str],
    aliases: dict[str, list[str]] | None = None,
    helps: dict[str, str] | None = None,
    metavars: dict[str, str] | None = None,
    preset: bool = False,
    required: Iterable[str] = (),
    flags: dict[str, str] | None = None,
) -> None:
    """A flag per field in ``names`` of the dataclass instance ``defaults`` (its values are the
    defaults); ``aliases`` adds short options, ``helps`` replaces a docstring where the command needs
    other words, ``metavars`` names the value, ``required`` lists flags that must be given, ``flags``
    names a flag otherwise than its field (``--backoff`` for ``backoff_base``). With
    ``preset``, a flag left out parses to None, so that ``from_flags(..., given_only=True)`` keeps the
    value of whichever preset the command starts from (``bolt demo --quick``); the help shows
    ``defaults``'s."""
    cls = type(defaults)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for name in names:
        default = getattr(defaults, name)
        keywords = _argument(hints[name], default)
        text = _help_style((helps or {}).get(name) or docs.get(name, ""))
        if default not in (None, []) and keywords.get("action") is None:
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            text = f"{text} (default: {shown})" if text else f"default: {shown}"
        if metavars and name in metavars:
            keywords["metavar"] = metavars[name]
        if preset and keywords.get("action") is not None:
            text = f"{text} (default: {'on' if default else 'off'})"
        flag = (flags or {}).get(name) or "--" + name.replace("_", "-")
        parser.add_argument(
            *(aliases or {}).get(name, []),
            flag,
            dest=name,
            default=None if preset else default,
            help=text,
            **({"required": True} if name in required else {}),
            **keywords,
        )


def from_flags(defaults: Any, args: argparse.Namespace, names: Iterable[str], given_only: bool = False) -> Any:
    """``defaults`` with the values the flags of ``names`` parsed to (``given_only``: those that were given)."""
    values = {name: getattr(args, name) for name in names}
    if given_only:
        values = {name: value for name, value in values.items() if value is not None}
    return dataclasses.replace(defaults, **values)
