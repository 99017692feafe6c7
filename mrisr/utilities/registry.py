"""Name -> component registries (planners, degradations, trainers, networks, metrics),
filled from ``importlib.metadata`` entry points.

Every registry has an entry-point group (``mrisr.degradations``, ``mrisr.trainers``,
``mrisr.planners``, ``mrisr.networks``, ``mrisr.metrics``). mrisr declares its own
components there (``setup.py``), and so does any installed package: a user's plugin adds
a component without editing mrisr. An entry point names either a module, whose import
registers what it holds (``@TRAINERS.register``), or the component itself, registered
under its own name (a class's ``__name__``, or the ``name`` of a degradation, network or
metric). The groups are read on the first lookup, and again after ``sys.path`` changes.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from mrisr.utilities.errors import MrisrError

T = TypeVar("T")

#: the distribution whose entry points are the built-in components
PACKAGE = "mrisr"

#: modules being imported by an entry point's load, in any registry: a plugin module that
#: looks a component up while it is imported must not have its own half-made module loaded
_IMPORTING: set[str] = set()


def default_key(obj) -> str | None:
    """A component's registry name: ``name`` where it carries one (a degradation, a
    network spec, a metric), else its ``__name__`` (a trainer or planner class)."""
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(obj, "__name__", None)


class Registry(Generic[T]):
    """A name -> component table with an entry-point group. ``register`` is a decorator."""

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._scanned_for: tuple[str, ...] | None = None

    def register(self, obj: T | None = None, *, name: str | None = None) -> Callable[[T], T] | T:
        def deco(o: T) -> T:
            key = name or default_key(o)
            if key is None:
                raise ValueError(f"cannot register a {self.kind} without a name")
            if key in self._items and self._items[key] is not o:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = o
            return o

        return deco(obj) if obj is not None else deco

    def load_entry_points(self) -> None:
        """Register the components of this registry's entry-point group (built-ins and
        every installed plugin); a no-op until ``sys.path`` changes."""
        if self.group is None or self._scanned_for == tuple(sys.path):
            return
        self._scanned_for = tuple(sys.path)
        eps = metadata.entry_points(group=self.group)
        if not any(_dist_name(ep) == PACKAGE for ep in eps):
            self._scanned_for = None
            raise MrisrError(
                f"mrisr's own {self.kind}s are not installed (no '{self.group}' entry points "
                "in its package metadata): reinstall it with pip install -e <mrisr folder>"
            )
        complete = True
        for ep in sorted(eps, key=lambda e: (_dist_name(e) != PACKAGE, e.name)):
            module = ep.value.split(":")[0].strip()
            if module in _IMPORTING:  # half imported further up: the next lookup loads it
                complete = False
                continue
            _IMPORTING.add(module)
            try:
                obj = ep.load()
            except MrisrError:
                self._scanned_for = None
                raise
            except Exception as e:  # a plugin's own failure, named with its entry point
                self._scanned_for = None
                msg = str(e).splitlines()[0] if str(e) else ""
                raise MrisrError(
                    f"the {self.kind} entry point '{ep.name} = {ep.value}' of package "
                    f"'{_dist_name(ep)}' does not load: {type(e).__name__}: {msg}"
                ) from None
            finally:
                _IMPORTING.discard(module)
            if not isinstance(obj, types.ModuleType):  # a module registered its contents
                self.register(obj)
        if not complete:
            self._scanned_for = None

    def declared_names(self) -> list[str]:
        """The names registered and declared by entry points, without importing anything
        (for a command's ``--help``)."""
        declared = (
            {ep.name for ep in metadata.entry_points(group=self.group)} if self.group else set()
        )
        return sorted(declared | set(self._items))

    def get(self, name: str) -> T:
        self.load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise MrisrError(
                f"unknown {self.kind} '{name}'; valid names: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self.load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _dist_name(ep: metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else None
