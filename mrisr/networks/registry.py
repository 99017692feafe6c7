"""The registry of SR networks (BasicSR's ARCH_REGISTRY): name -> how to build one.

A checkpoint records the registered ``network_class`` name and its ``network_args``
(plain JSON numbers, bounded by the network's ``arg_bounds`` before anything is
allocated), so a network is rebuilt from the checkpoint alone. The plans' ``sr`` section
names the network (``"name": "edsr"``; matched without regard to case).

Adding a network: a module in ``mrisr/networks/`` with a pure ``nn.Module`` and one
``NETWORKS.register(NetworkSpec(...), name=...)`` call, listed in :data:`BUILTIN_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mrisr.utilities.errors import MrisrError
from mrisr.utilities.registry import Registry

#: modules (in ``mrisr.networks``) whose import registers the built-in networks
BUILTIN_MODULES: tuple[str, ...] = ("edsr",)


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network: its class, the bounds of its constructor arguments
    (name -> (type, minimum, maximum)) and how the plans' ``sr`` section maps onto them."""

    name: str
    cls: type[nn.Module]
    arg_bounds: dict[str, tuple[type, float, float]]
    init_args: Callable[[dict, int], dict]


NETWORKS: Registry[NetworkSpec] = Registry("network")


def _import_builtin() -> None:
    for mod in BUILTIN_MODULES:
        importlib.import_module(f"mrisr.networks.{mod}")


def registered_networks() -> list[str]:
    """The registered network names (as checkpoints record them)."""
    _import_builtin()
    return NETWORKS.names()


def network_spec(name: str) -> NetworkSpec:
    """The registered network ``name`` (exact, else case-insensitive); one-line error."""
    _import_builtin()
    if not isinstance(name, str):
        raise MrisrError(f"checkpoint holds an unknown network class '{name}'")
    if name in NETWORKS:
        return NETWORKS.get(name)
    hits = [n for n in NETWORKS if n.lower() == name.lower()]
    return NETWORKS.get(hits[0] if hits else name)


def build_network(name: str, sr: dict, scale: int) -> tuple[nn.Module, dict]:
    """The network named ``name`` as the plans' ``sr`` section describes it, with the
    constructor arguments (to record in checkpoints)."""
    spec = network_spec(name)
    args = spec.init_args(sr, scale)
    return spec.cls(**args), args
