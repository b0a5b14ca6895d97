"""Progress bars that also work in log files.

On a terminal ``progress_bar`` is tqdm's bar. When stderr is not a terminal (nohup, Slurm,
``2> log``) a bar's carriage returns make one unreadable line, so there it prints whole lines
instead: one each time another 10% is done or a minute has passed, with the count, the rate
and the time left, and a last one when it ends. Runs that end within ``QUIET_SECONDS`` print
nothing. ``BOLT_PROGRESS=off`` silences both kinds.

Work that spends minutes inside one step of a bar (an E-step batch decoding 1,024 tokens on a
CPU) calls ``heartbeat``: the innermost open bar shows what it is doing (a log gets a line a
minute), so a long batch is never silent.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any

QUIET_SECONDS = 10.0
"""No line before this many seconds: a run that short needs no progress report."""
INTERVAL_SECONDS = 60.0
STEP_SHARE = 0.1


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LogProgress:
    """The subset of tqdm's interface that bolt uses (``update``, ``set_postfix``, ``close``, iteration,
    ``with``), as log lines."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: float | None = None,
        initial: float = 0,
        desc: str = "",
        unit: str = "it",
        file=None,
        interval: float = INTERVAL_SECONDS,
        step_share: float = STEP_SHARE,
        quiet: float = QUIET_SECONDS,
        **_: Any,
    ):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = self.initial = initial
        self.desc, self.unit, self.file = desc, unit, file
        self.interval, self.step_share, self.quiet = interval, step_share, quiet
        self.started = self.last_time = time.monotonic()
        self.last_mark = self._mark()
        self.postfix = ""
        self.printed_end = False

    def _mark(self) -> int:
        return int(self.n / self.total / self.step_share) if self.total else 0

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        done = (
            f"{self.n:g}/{self.total:g} {self.unit} ({100 * self.n / self.total:.0f}%)"
            if self.total
            else f"{self.n:g} {self.unit}"
        )
        eta = (
            f", {_duration((self.total - self.n) / rate)} left"
            if self.total and rate > 0 and self.n < self.total
            else ""
        )
        return f"{self.desc}: {done} in {_duration(elapsed)}, {rate:.3g} {self.unit}/s{eta}{self.postfix}"

    def _print(self) -> None:
        print(self.line(), file=self.file or sys.stderr, flush=True)
        self.last_time = time.monotonic()
        self.printed_end = self.total is not None and self.n >= self.total

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        mark = self._mark()
        if now - self.started >= self.quiet and (mark > self.last_mark or now - self.last_time >= self.interval):
            self._print()
        self.last_mark = max(self.last_mark, mark)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", " + ", ".join(f"{key}={value}" for key, value in values.items()) if values else ""

    def heartbeat(self, note: str) -> None:
        now = time.monotonic()
        if now - self.started >= self.quiet and now - self.last_time >= self.interval:
            print(f"{self.line()}; {note}", file=self.file or sys.stderr, flush=True)
            self.last_time = now

    def close(self) -> None:
        if not self.printed_end and time.monotonic() - self.started >= self.quiet:
            self._print()
        self.printed_end = True
        _forget(self)

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_name(path) -> str:
    """What a bar is about, from a path inside a run: ``runs/em/latents/em_2.jsonl.run/partial.jsonl`` -> ``em_2``, so
    that ``bolt em`` and ``bolt demo`` bars name the iteration."""
    from pathlib import Path

    for part in (Path(path), *Path(path).parents):
        if part.name.endswith(".run"):
            return part.name[: -len(".run")].removesuffix(".jsonl")
    return Path(path).stem


_OPEN: list[Any] = []
"""Open bars, innermost last: where ``heartbeat`` goes."""


def _forget(bar: Any) -> None:
    if bar in _OPEN:
        _OPEN.remove(bar)


def heartbeat(note: str) -> None:
    """Say ``note`` (e.g. "decoding token 300/1024") on the innermost open bar: on a terminal as its
    postfix (redrawn at most every second), in a log as a line when a minute has passed without one."""
    if _OPEN:
        _OPEN[-1].heartbeat(note)


def progress_bar(iterable: Iterable | None = None, **kwargs: Any):
    """tqdm on a terminal, ``LogProgress`` lines elsewhere; ``disable=True`` (a worker that is not the main
    process) and ``BOLT_PROGRESS=off`` silence it."""
    from tqdm.auto import tqdm

    if kwargs.get("disable") is True or os.environ.get("BOLT_PROGRESS", "").lower() in ("off", "0", "no"):
        return tqdm(iterable, **{**kwargs, "disable": True})
    stream = kwargs.get("file") or sys.stderr
    if getattr(stream, "isatty", lambda: False)():

        class TerminalBar(tqdm):
            last_beat = 0.0

            def heartbeat(self, note: str) -> None:
                if time.monotonic() - self.last_beat >= 1.0:
                    self.last_beat = time.monotonic()
                    self.set_postfix_str(note)

            def close(self) -> None:
                _forget(self)
                super().close()

        bar = TerminalBar(iterable, **{**kwargs, "disable": False})
    else:
        kwargs.pop("disable", None)
        bar = LogProgress(iterable, **kwargs)
    _OPEN.append(bar)
    del _OPEN[:-16]  # bars left open by an exception are not kept forever
    return bar
