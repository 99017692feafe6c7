"""Explicit name -> object registries (planners, degradations, trainers, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mrisr.utilities.errors import MrisrError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table. ``register`` works as a decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, obj: T | None = None, *, name: str | None = None) -> Callable[[T], T] | T:
        def deco(o: T) -> T:
            key = name or getattr(o, "__name__", None)
            if key is None:
                raise ValueError("cannot register an object without a name")
            if key in self._items and self._items[key] is not o:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[key] = o
            return o

        return deco(obj) if obj is not None else deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise MrisrError(
                f"unknown {self.kind} '{name}'; valid names: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
