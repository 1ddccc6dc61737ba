"""Name -> factory registries for encoders, defenses and attacks.

One small dict per kind, like Opacus' accountant registry: built-in parts
register themselves with :meth:`Registry.register`; third-party packages add
theirs through the entry-point groups ``facepii.encoders``,
``facepii.defenses``, ``facepii.attacks`` and ``facepii.oracles`` (the entry point's object is the
factory; its docstring's first line is the help), so a vendor adds its own
without forking facepii.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from facepii.errors import UnknownNameError


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    help: str
    origin: str  # "built-in" or the entry point's distribution


def first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """A named collection of factories of one kind ("encoder", "defense", "attack", "oracle")."""

    def __init__(self, kind: str, group: str, builtins_module: str | None = None):
        self.kind = kind
        self.group = group
        self._builtins_module = builtins_module
        self._entries: dict[str, Entry] = {}
        self._loaded = False

    def register(self, name: str, factory: Callable[..., Any] | None = None, *, help: str = "",
                 origin: str = "built-in"):
        """Register ``factory`` under ``name``; usable as a decorator."""

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            self._entries[name] = Entry(name, f, help or first_line(f), origin)
            return f

        return add(factory) if factory is not None else add

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._builtins_module:
            __import__(self._builtins_module)
        for ep in metadata.entry_points(group=self.group):
            if ep.name in self._entries:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plug-in must not break facepii
                self._entries.setdefault(
                    ep.name,
                    Entry(ep.name, _broken(ep.name, exc), f"(failed to load: {exc})", "entry point"),
                )
                continue
            dist = getattr(ep, "dist", None)
            origin = f"entry point ({dist.name})" if dist is not None else "entry point"
            self._entries[ep.name] = Entry(ep.name, obj, first_line(obj), origin)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self._load()
        return [self._entries[n] for n in sorted(self._entries)]

    def get(self, name: str) -> Entry:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(sorted(self._entries))} "
                f"(list them with `facepii {self.kind}s`)."
            ) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name).factory(*args, **kwargs)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


def _broken(name: str, exc: Exception) -> Callable[..., Any]:
    def factory(*_a: Any, **_k: Any) -> Any:
        raise UnknownNameError(f"plug-in '{name}' failed to load: {exc}")

    return factory


encoders = Registry("encoder", "facepii.encoders", "facepii.encoders")
defenses = Registry("defense", "facepii.defenses", "defenses")
attacks = Registry("attack", "facepii.attacks", "attacks")
oracles = Registry("oracle", "facepii.oracles", "attacks")
