"""Progress bars on long work (rich), silent when disabled or in tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_enabled = True


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


@contextmanager
def bar(description: str, total: int | None) -> Iterator[_Bar | _Null]:
    """A progress bar on stderr: ``with bar("embedding", n) as b: ... b.update(k)``."""
    if not enabled():
        yield _Null()
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
