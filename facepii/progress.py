"""Progress on long work: bars (rich) in a terminal, log lines in CI, silent when disabled or in tests.

When stderr is not a terminal (a CI log, a file), each task prints a start line, a heartbeat with the
share done at most every ``HEARTBEAT`` seconds, and an end line with its duration.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_enabled = True
HEARTBEAT = 30.0


def set_enabled(flag: bool) -> None:
    global _enabled
    _enabled = flag


def enabled() -> bool:
    return _enabled and os.environ.get("FACEPII_PROGRESS", "1") != "0"


class _Null:
    def update(self, advance: int = 1, **_k) -> None:
        pass


class _Bar:
    def __init__(self, progress, task):
        self._p, self._t = progress, task

    def update(self, advance: int = 1, **fields) -> None:
        self._p.update(self._t, advance=advance, **fields)


class _Log:
    """Log lines for a non-terminal stderr."""

    def __init__(self, description: str, total: int | None):
        self.description, self.total, self.done = description.strip(), total, 0
        self.start = self.last = time.monotonic()
        self.info = ""
        self._line(f"{self.description}: started" + (f" ({total} steps)" if total else ""))

    def _line(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def update(self, advance: int = 1, **fields) -> None:
        self.done += advance
        self.info = fields.get("info", self.info)
        now = time.monotonic()
        if now - self.last >= HEARTBEAT:
            self.last = now
            share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            self._line(f"{self.description}: {self.done}/{self.total or '?'}{share}, "
                       f"{now - self.start:.0f} s" + (f", {self.info}" if self.info else ""))

    def close(self) -> None:
        self._line(f"{self.description}: done in {time.monotonic() - self.start:.1f} s"
                   + (f" ({self.info})" if self.info else ""))


@contextmanager
def bar(description: str, total: int | None) -> Iterator[_Bar | _Null | _Log]:
    """Progress on stderr: ``with bar("embedding", n) as b: ... b.update(k)``."""
    if not enabled():
        yield _Null()
        return
    if not sys.stderr.isatty():
        log = _Log(description, total)
        yield log
        log.close()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=sys.stderr)
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  TextColumn("{task.fields[info]}"), console=console, transient=False) as p:
        task = p.add_task(description, total=total, info="")
        yield _Bar(p, task)


def note(message: str) -> None:
    """One line on stderr (when progress is on): ``[HH:MM:SS] message``."""
    if enabled():
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


#: wall seconds of every stage since the last ``reset_stage_times()`` (the report's provenance block)
STAGE_SECONDS: dict[str, float] = {}


def reset_stage_times() -> None:
    STAGE_SECONDS.clear()


@contextmanager
def stage(description: str) -> Iterator[None]:
    """A stage of the protocol, timed into STAGE_SECONDS; in a log (stderr not a terminal), its start
    and its end with the duration."""
    start = time.monotonic()
    log = enabled() and not sys.stderr.isatty()
    if log:
        print(f"[{time.strftime('%H:%M:%S')}] stage {description}: started", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        took = time.monotonic() - start
        STAGE_SECONDS[description] = STAGE_SECONDS.get(description, 0.0) + took
    if log:
        print(f"[{time.strftime('%H:%M:%S')}] stage {description}: done in {took:.1f} s", file=sys.stderr,
              flush=True)
