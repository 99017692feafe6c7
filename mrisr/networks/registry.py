"""The registry of SR networks (BasicSR's ARCH_REGISTRY): name -> how to build one.

A checkpoint records the registered ``network_class`` name and its ``network_args``
(plain JSON numbers, bounded by the network's ``arg_bounds`` before anything is
allocated), so a network is rebuilt from the checkpoint alone. The plans' ``sr`` section
names the network (``"name": "edsr"``; matched without regard to case).

Adding a network: a module with a pure ``nn.Module`` and a :class:`NetworkSpec`, declared in
the ``mrisr.networks`` entry-point group of its package (:mod:`mrisr.utilities.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mrisr.utilities.errors import MrisrError
from mrisr.utilities.registry import Registry


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network: its class, the bounds of its constructor arguments
    (name -> (type, minimum, maximum)) and how the plans' ``sr`` section maps onto them."""

    name: str
    cls: type[nn.Module]
    arg_bounds: dict[str, tuple[type, float, float]]
    init_args: Callable[[dict, int], dict]


NETWORKS: Registry[NetworkSpec] = Registry("network", "mrisr.networks")


def registered_networks() -> list[str]:
    """The registered network names (as checkpoints record them)."""
    return NETWORKS.names()


def network_spec(name: str) -> NetworkSpec:
    """The registered network ``name`` (exact, else case-insensitive); one-line error."""
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
