"""``--config FILE.yaml``: a command's options from a YAML file, and the resolved options of every
run written back as ``config.yaml`` in its run directory, so ``bolt CMD --config RUN/config.yaml``
runs it again.

The file is a mapping from the command's long flag names (``seq-len`` or ``seq_len``) and
positional names (``input``) to values; an optional ``command`` key must name the command it is
given to. Flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bolt.errors import BoltError

FILE_NAME = "config.yaml"
"""What every run directory gets: the options that ran it, in the form ``--config`` reads."""
_SKIPPED = {"help", "config", "overwrite"}
"""Options never read from or written to a file: a file must not overwrite outputs on its own."""


def config_path(argv: list[str]) -> Path | None:
    """The ``--config`` value in ``argv``, before any parsing (it changes how the rest is parsed)."""
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            return Path(argv[index + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None


def _key(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith("--")]
    return longs[0][2:] if longs else action.dest


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {_key(a): a for a in parser._actions if a.dest not in _SKIPPED and a.dest != argparse.SUPPRESS}


def read(path: Path, command: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BoltError(f"--config {path}: no such file.") from None
    except yaml.MarkedYAMLError as exc:
        where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        raise BoltError(f"--config {path}: not a readable YAML file ({where}{exc.problem or exc.context}).") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise BoltError(f"--config {path}: not a readable YAML file ({reason}).") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BoltError(
            f"--config {path}: holds a {type(data).__name__}; it must be a mapping of flag names to values."
        )
    named = data.pop("command", command)
    if named != command:
        raise BoltError(f"--config {path}: is a config of `bolt {named}`, not of `bolt {command}`.")
    return {str(key).replace("_", "-"): value for key, value in data.items()}


def apply(parser: argparse.ArgumentParser, options: dict[str, Any], path: Path) -> None:
    """Make ``options`` the subcommand parser's defaults; required options and positionals they
    give become optional on the command line."""
    actions = {key.replace("_", "-"): action for key, action in _actions(parser).items()}
    unknown = sorted(set(options) - set(actions))
    if unknown:
        raise BoltError(
            f"--config {path}: unknown option(s) {', '.join(unknown)} for `bolt {parser.prog.split()[-1]}`; "
            f"known: {', '.join(sorted(actions))}."
        )
    defaults = {}
    for key, value in options.items():
        action = actions[key]
        if value is None:
            continue
        if isinstance(value, list) and action.nargs is None and action.type is not None:
            value = ",".join(str(v) for v in value)  # a comma-separated flag (--sweep 1,4,16) given as a list
        if isinstance(value, list) and action.nargs in ("+", "*") and action.type is not None:
            value = [action.type(v) if isinstance(v, str) else v for v in value]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) and not isinstance(value, bool):
            raise BoltError(f"--config {path}: {key} is a switch; give true or false, not {value!r}.")
        if action.choices is not None and not isinstance(value, list) and value not in action.choices:
            raise BoltError(f"--config {path}: {key}: {value!r} is not one of {', '.join(map(str, action.choices))}.")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and action.type in (int, float):
            value = action.type(value)
        defaults[action.dest] = value
        action.required = False
        if not action.option_strings:
            action.nargs = "*" if action.nargs in ("+", "*") else "?"
    parser.set_defaults(**defaults)


def resolved(parser: argparse.ArgumentParser, args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The options ``args`` ran with, keyed as ``read`` takes them (None values left out)."""
    from bolt.core.rundir import config_to_json
    from bolt.core.scrub import scrub_data

    options: dict[str, Any] = {"command": command}
    for key, action in _actions(parser).items():
        value = getattr(args, action.dest, None)
        if value is not None:
            options[key] = value
    return scrub_data(config_to_json(options))


def write(directory: Path, options: dict[str, Any]) -> None:
    import yaml

    from bolt.core.records import atomic_path

    with atomic_path(directory / FILE_NAME) as temporary:
        temporary.write_text(yaml.safe_dump(options, sort_keys=False, allow_unicode=True), encoding="utf-8")
